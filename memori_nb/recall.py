"""Recall: the facts of an entity most relevant to a query, ranked as Memori ranks them.

Memori's recall embeds the query with all-MiniLM-L6-v2, reads the entity's 1,000 most recent
facts, ranks them by inner product (the vectors are unit length, so it is the cosine), takes
a pool of the best candidates and re-ranks the pool by a blend of that similarity and a BM25
score over the candidates' words (normalised to [0, 1]). Short queries lean more on words.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from .errors import ConfigurationError

RECALL_FACTS = 1000
# Weight of the lexical score in the blend: queries of two words or fewer lean on words.
LEXICAL_WEIGHT = 0.15
LEXICAL_WEIGHT_SHORT = 0.30
BM25_K1, BM25_B = 1.2, 0.75
# Words that say nothing about which fact is meant.
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how i in is it of on or that "
    "the their then there to was were what when where which who why with you your".split())
_WORD = re.compile(r"[a-z0-9]+")


def recall_facts(store: Any, entity_id: str, query: str, *, limit: int = 5) -> list[dict]:
    """The ``limit`` best facts of ``entity_id`` for ``query``, best first.

    Each is a dict with ``id``, ``content``, ``score`` (the blended rank score),
    ``similarity`` (cosine) and ``date_last_time``.

    Raises:
        ConfigurationError: the store keeps no embeddings to recall from.
    """
    import numpy as np

    from .embeddings import EMBEDDING_DIM

    read_facts = getattr(store, "entity_facts", None)
    if read_facts is None:
        raise ConfigurationError(f"{store!r} keeps no fact embeddings to recall from; seed "
                                 f"into Memori's tables (a SQL conn) to use recall")
    rows = [row for row in read_facts(entity_id, RECALL_FACTS)
            if len(row[2]) == EMBEDDING_DIM * 4]  # other models' vectors cannot be compared
    if not rows or limit < 1:
        return []
    matrix = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4").reshape(
        len(rows), EMBEDDING_DIM)
    similarity = matrix @ store.embedder.embed([query])[0]
    pool_size = max(limit, min(len(rows), max(limit * 10, 50)))
    pool = [int(i) for i in np.argsort(-similarity, kind="stable")[:pool_size]]
    lexical = bm25_scores(query, [rows[i][1] for i in pool])
    weight = LEXICAL_WEIGHT_SHORT if len(words(query)) <= 2 else LEXICAL_WEIGHT
    scored = sorted(((float((1 - weight) * similarity[i] + weight * lex), float(similarity[i]), i)
                     for i, lex in zip(pool, lexical)), reverse=True)
    return [{"id": rows[i][0], "content": rows[i][1], "score": round(score, 6),
             "similarity": round(cos, 6), "date_last_time": rows[i][3]}
            for score, cos, i in scored[:limit]]


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without stopwords."""
    return [w for w in _WORD.findall((text or "").lower()) if w not in _STOPWORDS]


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
