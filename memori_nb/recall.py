"""Recall: the facts of an entity most relevant to a query, ranked as Memori ranks them.

Memori's recall embeds the query with all-MiniLM-L6-v2, reads the entity's 1,000 most recent
facts, ranks them by inner product (the vectors are unit length, so it is the cosine), takes
a pool of the best candidates and re-ranks the pool by a blend of that similarity and a BM25
score over the candidates' words (normalised to [0, 1]). Short queries lean more on words.

The stores do the first step (``similar_facts``): the Memori SQL store from the
``content_embedding`` column seeding wrote, with numpy; the DuckDB store in SQL, with
``array_inner_product`` over ``FLOAT[384]`` vectors that recall computes when it first needs
them and keeps in ``fact_embeddings`` (one per distinct text), so seeding never embeds.

::

    m.recall("where does the user live?", entity_id="user-ana", limit=3)
    # [{'content': 'user lives_in Lisbon', 'score': 0.71, 'conversations': ['ana-001'], ...}]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from .errors import ConfigurationError
from .validation import safe_text

RECALL_FACTS = 1000
# Weight of the lexical score in the blend: queries of two words or fewer lean on words.
LEXICAL_WEIGHT = 0.15
LEXICAL_WEIGHT_SHORT = 0.30
BM25_K1, BM25_B = 1.2, 0.75
# Words that say nothing about which fact is meant.
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how i in is it of on or that "
    "the their then there to was were what when where which who why with you your".split())
_WORD = re.compile(r"[a-z0-9]+")


def recall_facts(store: Any, entity_id: str | None, query: str, *,
                 limit: int = 5) -> list[dict]:
    """The ``limit`` facts of ``entity_id`` most relevant to ``query``, best first.

    Works on both stores: each gives its ``similar_facts`` (the pool of candidates most
    similar to the query, from the entity's ``RECALL_FACTS`` most recent facts), which are
    re-ranked here by a blend of similarity and BM25 over the pool's words.

    Args:
        store: a :class:`~memori_nb.stores.DuckDBStore` or :class:`~memori_nb.stores.SqlStore`.
        entity_id: whose facts; None for the store's only entity.
        query: a question or phrase, e.g. ``"where does the user live?"``.
        limit: how many facts at most.

    Returns:
        One dict per fact: ``id`` (the ``memori_entity_fact`` row on the SQL store, else
        None), ``entity_id``, ``content``, ``score`` (the blended rank score),
        ``similarity`` (cosine), ``date_last_time`` (the recency Memori ranks candidates
        by), ``conversations`` (ids of the conversations that stated it), ``first_seen``
        and ``last_seen``. Empty when the entity has no facts.

    Raises:
        ConfigurationError: a bad ``query`` or ``limit``; no ``entity_id`` and not exactly
            one entity in the store; the embedding model is not installed.
    """
    if not isinstance(query, str) or not query.strip():
        raise ConfigurationError(f"recall needs a query: a question or phrase, got {query!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"limit must be a whole number of facts, 1 or more; "
                                 f"got {limit!r}")
    if getattr(store, "similar_facts", None) is None:
        raise ConfigurationError(f"{store!r} cannot recall: use a DuckDB or Memori SQL store")
    # What no store or tokenizer takes (a lone surrogate) is made what seeding makes it.
    query = safe_text(query)[0]
    entity = entity_id if entity_id is not None else only_entity(store)
    embedder = store.embedder
    load = getattr(embedder, "load", None)
    if load is not None:
        load()  # a missing model or package is a ConfigurationError saying what to install
    pool = store.similar_facts(entity, embedder.embed([query])[0], max(limit * 10, 50))
    if not pool:
        return []
    lexical = bm25_scores(query, [fact for fact, _, _ in pool])
    weight = LEXICAL_WEIGHT_SHORT if len(words(query)) <= 2 else LEXICAL_WEIGHT
    scores = [(1 - weight) * similarity + weight * lex
              for (_, similarity, _), lex in zip(pool, lexical)]
    # Stable: equal scores keep the similarity order.
    best = sorted(range(len(pool)), key=lambda i: scores[i], reverse=True)[:limit]
    details = store.fact_details(entity, [pool[i][0] for i in best])
    recalled = []
    for i in best:
        fact, similarity, recency = pool[i]
        found = details.get(fact, {})
        recalled.append({"id": found.get("id"), "entity_id": entity, "content": fact,
                         "score": round(scores[i], 6), "similarity": round(similarity, 6),
                         "date_last_time": recency,
                         "conversations": found.get("conversations", []),
                         "first_seen": found.get("first_seen"),
                         "last_seen": found.get("last_seen")})
    return recalled


def only_entity(store: Any) -> str:
    """The store's only entity: what recall uses when no entity is given or attributed.

    Raises:
        ConfigurationError: the store holds no entity, or more than one (naming how many).
    """
    entity, count = store.only_entity()
    if entity is not None:
        return entity
    if count == 0:
        raise ConfigurationError("recall needs an entity, and this store holds none yet: "
                                 "seed conversations first")
    raise ConfigurationError(f"recall needs an entity: this store holds {count:,} entities; "
                             f"pass entity_id= (or set m.attribution(entity_id=...))")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without stopwords."""
    return [w for w in _WORD.findall((text or "").lower()) if w not in STOPWORDS]


def bm25_scores(query: str, documents: list[str]) -> list[float]:
    """BM25 of each document for ``query`` over this pool, divided by the best (0 to 1)."""
    terms = set(words(query))
    docs = [Counter(words(d)) for d in documents]
    if not terms or not docs:
        return [0.0] * len(documents)
    lengths = [sum(d.values()) for d in docs]
    average = sum(lengths) / len(docs)
    idf = {t: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5))
           for t in terms for n in [sum(1 for d in docs if t in d)]}
    raw = []
    for doc, length in zip(docs, lengths):
        norm = (1 - BM25_B) + BM25_B * length / average if average else 1.0
        raw.append(sum(idf[t] * doc[t] * (BM25_K1 + 1) / (doc[t] + BM25_K1 * norm)
                       for t in terms if doc[t]))
    best = max(raw)
    return [r / best if best > 0 else 0.0 for r in raw]
