"""Memori's Advanced Augmentation (AA) wire protocol: both sides of one exchange.

The client side builds the request body (:func:`build_payload`, :func:`encode_payload`) and
checks the answer (:func:`parse_extraction`); the server side, used by the loopback server in
:mod:`memori_nb.testing`, reads a request (:func:`parse_request`) and writes an answer
(:func:`answer_from_extraction`). The HTTP exchange itself is in
:mod:`memori_nb.backends.memori`. Shapes: DESIGN.md section 2.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import TransientError
from ..models import Extraction, Triple
from . import read_json_object

if TYPE_CHECKING:  # the backends import this module: no import cycle at run time
    from ..backends.base import AugmentationRequest

AUGMENTATION_PATH = "/v1/sdk/augmentation"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def build_payload(request: AugmentationRequest) -> dict[str, Any]:
    """The AA request body (DESIGN.md section 2)."""
    process = sha256_hex(request.process_id) if request.process_id else None
    return {
        "conversation": {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "summary": request.summary,
        },
        "meta": {
            "attribution": {"entity": {"id": sha256_hex(request.entity_id)},
                            "process": {"id": process}},
            "framework": {"provider": "memori_nb"},
            "llm": {"model": {"provider": None, "sdk": {"version": None}, "version": None}},
            "platform": {"provider": None},
            "sdk": {"lang": "python", "version": __version__},
            "storage": {"cockroachdb": False, "dialect": "duckdb"},
        },
    }


def encode_payload(request: AugmentationRequest) -> bytes:
    """:func:`build_payload` as the request body: compact JSON, non-ASCII characters escaped
    (twice as fast to encode as UTF-8 output, and the bytes need no second encoding pass)."""
    return json.dumps(build_payload(request), separators=(",", ":"),
                      allow_nan=False).encode("ascii")


class _Malformed(Exception):
    """A 200 whose body does not follow the protocol (the message says where)."""


def parse_extraction(data: bytes, redact=lambda text: text, context: dict | None = None
                     ) -> Extraction:
    """Check a 200 body against the protocol and turn it into an Extraction.

    The documented shape (DESIGN.md section 2): a JSON object whose ``entity`` is an object
    with ``triples`` and/or ``facts`` as lists (at least one of them; both may be empty);
    each triple has ``subject`` and ``object`` objects with a non-empty string ``name`` and
    an optional string ``type``, and a non-empty string ``predicate``; facts are strings;
    ``conversation.summary`` is a string or null; ``process.attributes`` a list of strings.
    ``conversation`` and ``process`` may be missing. Anything else is malformed: a
    :class:`TransientError` (retried, then failed), never an empty success. Every string is
    passed through ``redact``.

    Example:
        >>> parse_extraction(b'{"entity": {"facts": ["likes tea"]}}').facts
        ('likes tea',)
    """
    try:
        body = json.loads(data)
        return _extraction(body, redact)
    except (ValueError, RecursionError, _Malformed) as exc:
        problem = "not JSON" if isinstance(exc, (ValueError, RecursionError)) else str(exc)
        raise TransientError(f"malformed response body ({problem})",
                             **(context or {})) from exc


def _extraction(body: Any, redact) -> Extraction:
    if not isinstance(body, dict):
        raise _Malformed(f"the answer is a {type(body).__name__}, not an object")
    entity = _field(body, "entity", dict, "")
    triples = _field(entity, "triples", list, "entity", optional=True)
    facts = _field(entity, "facts", list, "entity", optional=True)
    if triples is None and facts is None:
        raise _Malformed("entity has neither 'triples' nor 'facts'")
    parsed = tuple(_triple(t, i, redact) for i, t in enumerate(triples or ()))
    fact_texts = tuple(redact(_text(f, f"entity.facts[{i}]")) for i, f in enumerate(facts or ()))
    conversation = _field(body, "conversation", dict, "", optional=True) or {}
    summary = _field(conversation, "summary", str, "conversation", optional=True)
    process = _field(body, "process", dict, "", optional=True) or {}
    attributes = _field(process, "attributes", list, "process", optional=True) or ()
    return Extraction(
        triples=parsed, facts=fact_texts or tuple(t.fact for t in parsed),
        summary=redact(summary) if summary is not None else None,
        attributes=tuple(redact(_text(a, f"process.attributes[{i}]"))
                         for i, a in enumerate(attributes)))


def _triple(value: Any, index: int, redact) -> Triple:
    where = f"entity.triples[{index}]"
    if not isinstance(value, dict):
        raise _Malformed(f"{where} is a {type(value).__name__}, not an object")
    ends = {}
    for end in ("subject", "object"):
        node = _field(value, end, dict, where)
        name = _text(node.get("name"), f"{where}.{end}.name")
        kind = _field(node, "type", str, f"{where}.{end}", optional=True) or "unknown"
        ends[end] = (redact(name), redact(kind))
    predicate = _text(value.get("predicate"), f"{where}.predicate")
    return Triple(subject_name=ends["subject"][0], subject_type=ends["subject"][1],
                  predicate=redact(predicate), object_name=ends["object"][0],
                  object_type=ends["object"][1])


def _field(container: Any, key: str, kind: type, where: str, *, optional: bool = False) -> Any:
    """``container[key]`` checked to be a ``kind`` (missing or null allowed if optional)."""
    value = container.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind):
        got = "missing" if key not in container else (
            "null" if value is None else f"a {type(value).__name__}")
        path = f"{where}.{key}" if where else key
        raise _Malformed(f"{path} is {got}, not {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _text(value: Any, where: str) -> str:
    """A non-empty string; numbers become strings (an age, a year)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        got = "empty" if isinstance(value, str) else (
            "null" if value is None else f"a {type(value).__name__}")
        raise _Malformed(f"{where} is {got}, not a non-empty string")
    return value


# -- the server side --------------------------------------------------------------------


def parse_request(raw: bytes) -> tuple[dict | None, str | None]:
    """Read and check an AA request body: ``(body, None)``, or ``(body_or_None, problem)``
    naming what is wrong (a server answers 422 with it).

    Example:
        >>> parse_request(b'{"conversation": {"messages": []}}')
        ({'conversation': {'messages': []}}, None)
    """
    body, problem = read_json_object(raw)
    if problem:
        return None, problem
    conversation = body.get("conversation")
    messages = conversation.get("messages") if isinstance(conversation, dict) else None
    if not isinstance(messages, list):
        return body, "conversation.messages is required and must be a list"
    for index, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            return body, f"conversation.messages[{index}] needs string 'role' and 'content'"
    summary = conversation.get("summary")
    if summary is not None and not isinstance(summary, str):
        return body, "conversation.summary must be a string or null"
    return body, None


def answer_from_extraction(extraction: Extraction) -> dict:
    """An :class:`~memori_nb.models.Extraction` as the AA answer JSON.

    Facts default to ``"{subject} {predicate} {object}"`` of each triple when the extraction
    has none; a missing summary becomes ``""``.
    """
    triples = [{"subject": {"name": t.subject_name, "type": t.subject_type},
                "predicate": t.predicate,
                "object": {"name": t.object_name, "type": t.object_type}}
               for t in extraction.triples]
    facts = list(extraction.facts) or [t.fact for t in extraction.triples]
    return {"entity": {"triples": triples, "facts": facts},
            "conversation": {"summary": extraction.summary or ""},
            "process": {"attributes": list(extraction.attributes)}}
