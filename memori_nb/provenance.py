"""Provenance: which messages of a conversation stated a fact, found by its words.

Backends report facts per conversation, not per message (neither the Advanced Augmentation
protocol nor the chat protocol says where a fact came from), so memori_nb finds the sources
itself, the same way for every backend, unless the backend said (``Extraction.sources``: the
local extractor knows which message it read a fact in). The rule, for one fact and one
conversation:

1. The fact's content words: lower-cased words, stop words left out. A fact shaped like
   ``"user lives_in Cape Town"`` (subject, predicate, object, as triples make them) loses its
   subject ``user``; its predicate is split on ``_`` (``lives``, ``in``); the rest is the
   object (``cape``, ``town``). Any other fact text is all object.
2. A message matches a word when it holds the word or a simple inflection of it (``like``,
   ``likes``, ``liked``, ``liking``; ``study``/``studies``). Words in scripts written without
   spaces (CJK) match anywhere in the message.
3. A message's score: 2 per distinct object word it holds, 1 per predicate word. It counts
   only if it holds an object word (a predicate word when the fact has no object words).
4. User messages are preferred: when one counts, assistant and system messages are not
   considered. The sources are every message with the best score (at most
   ``MAX_SOURCES``, earliest first); none when no message counts.

It is deterministic and cheap: each message is lower-cased once, and only the stems of the
facts' words are searched for (assistant and system messages only for facts no user message
stated).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache

from .models import Extraction, Message
from .recall import STOPWORDS

#: The most messages given as the sources of one fact in one conversation.
MAX_SOURCES = 5
#: How long an excerpt of a source message is (characters, without the "…").
EXCERPT_CHARS = 300

# Subjects that name the speaker, not what was said; and first-person words.
_IGNORED = STOPWORDS | {"user", "my", "me", "am", "im", "ive", "myself", "s", "t"}
# Letters and digits of any script; "_" splits a predicate into its words.
_WORD = re.compile(r"[^\W_]+")
OBJECT_WEIGHT, PREDICATE_WEIGHT = 2, 1


def locate(facts: Sequence[str], messages: Sequence[Message],
           known: Mapping[str, tuple[int, ...]] | None = None) -> list[tuple[int, ...]]:
    """The positions of the messages that stated each fact, by the rule in this module's
    docstring.

    Args:
        facts: fact texts, e.g. ``"user owns Tesla Model 3"``.
        messages: the whole conversation, in order.
        known: positions the backend reported for some facts (``Extraction.sources``): those
            are taken as they are, and only the other facts are looked for.

    Returns:
        One tuple per fact: 0-based positions in ``messages``, in order; ``()`` when no
        message holds the fact's words.

    Example:
        >>> from memori_nb.models import Message
        >>> locate(["user owns Tesla Model 3"],
        ...        [Message(role="user", content="Hi!"),
        ...         Message(role="user", content="I just bought a Tesla Model 3."),
        ...         Message(role="assistant", content="Congrats on the Tesla!")])
        [(1,)]
    """
    if known:
        wanted = [fact for fact in facts if fact not in known]
        found = dict(zip(wanted, locate(wanted, messages))) if wanted else {}
        return [known[fact] if fact in known else found[fact] for fact in facts]
    if not facts:
        return []
    needles: dict[str, list[tuple[int, str, int, frozenset[str] | None]]] = {}
    needs_object = []
    for f, fact in enumerate(facts):
        has_object, searches = _searches(fact)
        needs_object.append(has_object)
        for needle, word, weight, forms in searches:
            needles.setdefault(needle, []).append((f, word, weight, forms))
    scores: list[dict[int, int]] = [{} for _ in facts]  # fact -> {message: score}
    counted: list[set[int]] = [set() for _ in facts]  # messages that count for the fact
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    _score(messages, users, needles, scores, counted, needs_object)
    # Other messages matter only for facts no user message stated.
    missing = {f for f in range(len(facts)) if not counted[f]}
    if missing and len(users) < len(messages):
        rest = {needle: [entry for entry in entries if entry[0] in missing]
                for needle, entries in needles.items()}
        others = [i for i, m in enumerate(messages) if m.role != "user"]
        _score(messages, others, {k: v for k, v in rest.items() if v}, scores, counted,
               needs_object)
    located = []
    for f in range(len(facts)):
        if not counted[f]:
            located.append(())
            continue
        best = max(scores[f][i] for i in counted[f])
        located.append(tuple(sorted(i for i in counted[f]
                                    if scores[f][i] == best)[:MAX_SOURCES]))
    return located


def with_sources(extraction: Extraction, messages: Sequence[Message]) -> Extraction:
    """``extraction`` with ``sources`` for each of its facts: the positions the backend
    reported, and :func:`locate`'s for the others (the stores then take them as they are).

    Example:
        >>> from memori_nb.models import Message
        >>> with_sources(Extraction(facts=("user owns Tesla Model 3",)),
        ...              [Message(role="user", content="I bought a Tesla Model 3.")]).sources
        (('user owns Tesla Model 3', (0,)),)
    """
    if extraction.sources and set(extraction.facts) <= dict(extraction.sources).keys():
        return extraction
    return replace(extraction, sources=tuple(fact_sources(extraction, messages)))


def fact_sources(extraction: Extraction, messages: Sequence[Message]
                 ) -> list[tuple[str, tuple[int, ...]]]:
    """(fact, positions) for each distinct fact of ``extraction``, in order: the positions
    the backend reported (``sources``), else :func:`locate`'s."""
    unique = list(dict.fromkeys(extraction.facts))
    sources = extraction.sources
    if sources and len(sources) == len(unique) and [fact for fact, _ in sources] == unique:
        return list(sources)  # every fact's, in order (as with_sources leaves them)
    known = dict(sources) if sources else None
    return list(zip(unique, locate(unique, messages, known)))


def _score(messages: Sequence[Message], which: list[int], needles: dict[str, list],
           scores: list[dict[int, int]], counted: list[set[int]],
           needs_object: list[bool]) -> None:
    """Add the scores of messages ``which`` (positions) to ``scores`` and ``counted``."""
    if not which or not needles:
        return
    lowered = [messages[i].content.lower() for i in which]
    # The words that make a message count are looked for everywhere; the others (predicate
    # words, which only add to a score) only in the messages found that way.
    decisive = {needle: entries for needle, entries in needles.items()
                if any(weight == OBJECT_WEIGHT or not needs_object[f]
                       for f, _, weight, _ in entries)}
    hits: set[tuple[int, int, str, int]] = set()  # (message, fact, word, weight)
    _find(lowered, which, decisive, hits)
    others = {needle: entries for needle, entries in needles.items() if needle not in decisive}
    holding = {hit[0] for hit in hits}
    found = [k for k, i in enumerate(which) if i in holding]
    if others and found:
        _find([lowered[k] for k in found], [which[k] for k in found], others, hits)
    for i, f, _, weight in hits:
        scores[f][i] = scores[f].get(i, 0) + weight
        if weight == OBJECT_WEIGHT or not needs_object[f]:
            counted[f].add(i)


def _find(lowered: list[str], which: list[int], needles: dict[str, list],
          hits: set[tuple[int, int, str, int]]) -> None:
    """Add to ``hits`` (message, fact, word, weight) for each whole word of ``needles``
    in the lower-cased texts of messages ``which``."""
    starts, at = [], 0
    for text in lowered:
        starts.append(at)
        at += len(text) + 1
    text = "\n".join(lowered)  # one search per needle, however many messages
    for needle, entries in needles.items():
        # The messages each whole word starting with the needle is in; then the facts
        # looking for it (a word said often in a long conversation with many facts would
        # otherwise cost occurrences times facts).
        where: dict[str | None, set[int]] = {}
        pos = text.find(needle)
        while pos >= 0:
            whole = None
            if pos == 0 or not text[pos - 1].isalnum():
                match = _WORD.match(text, pos)
                whole = match.group() if match else None
            where.setdefault(whole, set()).add(which[bisect_right(starts, pos) - 1])
            pos = text.find(needle, pos + len(needle))
        for f, word, weight, forms in entries:
            for whole, messages in where.items():
                if forms is None or whole in forms:
                    hits.update((message, f, word, weight) for message in messages)


@lru_cache(maxsize=8192)  # an entity's facts come back conversation after conversation
def _searches(fact: str) -> tuple[bool, tuple[tuple[str, str, int, frozenset[str] | None], ...]]:
    """(whether the fact has object words, and per word: the substring to search for, the
    word, its weight, the whole words that count as it (None: any occurrence counts)).

    A word is searched for by a stem all its forms start with (a substring search is
    cheaper than splitting every message into words), then checked whole.
    """
    object_words, predicate_words = fact_words(fact)
    searches = []
    for weight, group in ((OBJECT_WEIGHT, object_words), (PREDICATE_WEIGHT, predicate_words)):
        for word in group:
            if _unspaced(word):
                searches.append((word, word, weight, None))
                continue
            forms = _inflections(word)
            needle = min(forms, key=len)
            needle = needle[:-1] if needle.endswith("y") and len(needle) > 3 else needle
            searches.append((needle, word, weight, frozenset(forms)))
    return bool(object_words), tuple(searches)


def fact_words(fact: str) -> tuple[list[str], list[str]]:
    """(object words, predicate words) of a fact, as :func:`locate` weighs them.

    Example:
        >>> fact_words("user lives_in Cape Town")
        (['cape', 'town'], ['lives'])
    """
    parts = fact.split()
    if len(parts) >= 3 and parts[0].lower() == "user":
        predicate, rest = parts[1], " ".join(parts[2:])
    else:
        predicate, rest = "", fact
    object_words = _content_words(rest)
    return object_words, [w for w in _content_words(predicate) if w not in object_words]


def excerpt(text: str, fact: str, width: int = EXCERPT_CHARS) -> str:
    """``text`` with whitespace collapsed, cut to about ``width`` characters around the first
    of the fact's words it holds ("…" where it was cut).

    Example:
        >>> excerpt("x " * 400 + "I moved to Lisbon. " + "y " * 400, "user lives_in Lisbon")[:12]
        '…x x x x x x'
    """
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    object_words, predicate_words = fact_words(fact)
    wanted = {form for word in object_words + predicate_words for form in _inflections(word)}
    lowered = text.lower()
    at = next((m.start() for m in _WORD.finditer(lowered) if m.group() in wanted), None)
    if at is None:
        at = min((p for p in (lowered.find(w) for w in object_words) if p >= 0), default=0)
    start = max(0, min(at - width // 3, len(text) - width))
    end = start + width
    # Cut at spaces, so words stay whole.
    if start > 0:
        space = text.find(" ", start, start + 30)
        start = space + 1 if space >= 0 else start
    if end < len(text):
        space = text.rfind(" ", end - 30, end)
        end = space if space > start else end
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


def _content_words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in _IGNORED:
            seen[word] = None
    return list(seen)


def _unspaced(word: str) -> bool:
    """True for words of scripts written without spaces (CJK, kana, Thai...): a message's
    "words" there are whole phrases, so such a word is looked for as a substring."""
    return any(ord(ch) >= 0x2E80 or 0x0E00 <= ord(ch) <= 0x109F or 0x1780 <= ord(ch) <= 0x17FF
               for ch in word)


def _inflections(word: str) -> set[str]:
    """The word and the forms an English inflection gives it (from a crude stem), so that
    "likes" finds "like", "liked" and "liking"; "plans" finds "planning"."""
    stem = _stem(word)
    forms = {word, stem, stem + "s", stem + "es", stem + "e", stem + "ed",
             stem + "d", stem + "ing", stem + "er", stem + "ers"}
    if stem.endswith("y"):
        forms |= {stem[:-1] + "ies", stem[:-1] + "ied"}
    if len(stem) >= 3 and stem[-1] not in "aeiouwxy" and stem[-2] in "aeiou":
        forms |= {stem + stem[-1] + "ing", stem + stem[-1] + "ed"}  # plan: planning, planned
    return forms


def _stem(word: str) -> str:
    for suffix, replacement in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""),
                                ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)] + replacement
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word
