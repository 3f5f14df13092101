"""OpenAI-compatible chat completions as an extraction protocol: both sides of one exchange.

Everything the model is told lives here, in one place: :data:`SYSTEM_PROMPT` and
:data:`EXTRACTION_SCHEMA`, with the reasons for their choices. The client side builds a
request per structured-output mode (:func:`build_request`) and checks the answer
(:func:`parse_answer`); the server side, used by the loopback server in
:mod:`memori_nb.testing`, reads a request (:func:`parse_request`) and writes an answer
(:func:`completion`). The HTTP exchange is in :mod:`memori_nb.backends.openai`.

The summary carries over across chunks exactly as Memori's AA protocol does: the previous
chunk's summary goes in with the chunk, an updated summary of everything so far comes out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TransientError
from ..models import Extraction, Message, Triple, Usage
from . import read_json_object

if TYPE_CHECKING:  # the backends import this module: no import cycle at run time
    from ..backends.base import AugmentationRequest

# Structured output, strictest first. Servers differ (RESEARCH.md section 5): OpenAI, vLLM,
# Ollama and llama-server take a strict json_schema; llama-cpp-python's server wants the
# schema inside json_object; plain json_object is accepted everywhere but enforces nothing,
# so in that mode the schema is spelled out in the prompt instead.
MODES = ("json_schema", "json_object_schema", "json_object")
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")

# The user: every triple's subject. The same name and type as the local extractor, so facts
# from either backend read alike ("user lives_in Lisbon").
USER_NAME = "user"
USER_TYPE = "person"


def _node(what: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["name", "type"],
            "properties": {"name": {"type": "string", "description": what},
                           "type": {"type": "string",
                                    "description": "person, place, organization, thing, "
                                                   "activity, date, ..."}}}


# What the model fills in. Why this shape:
# - triples, not free sentences: subject and object with a type, and a predicate, are what
#   Memori stores; facts are derived from them ("{subject} {predicate} {object}", as the AA
#   protocol does), so facts and triples never disagree and the model writes each fact once;
# - every field required and additionalProperties false: OpenAI's strict mode demands it, and
#   a model that must write "summary" does not forget it;
# - no numbers or nullable fields: small models trip over unions; "" is the empty answer.
EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["triples", "summary", "attributes"],
    "properties": {
        "triples": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["subject", "predicate", "object"],
                "properties": {
                    "subject": _node('"user" for the user, else who or what the fact is about'),
                    "predicate": {"type": "string",
                                  "description": "a short verb phrase in snake_case"},
                    "object": _node("the value: a name, place, thing, date, ..."),
                },
            },
        },
        "summary": {"type": "string",
                    "description": "the conversation so far, previous summary included"},
        "attributes": {"type": "array", "items": {"type": "string"},
                       "description": "what the assistant does for the user here"},
    },
}

# Why these instructions:
# - facts about the user only, as stated in the conversation: what a memory layer recalls
#   later is what the user told it, not what the assistant suggested or invented;
# - the categories are named because small models otherwise keep only preferences;
# - hypotheticals, quotes, jokes and questions are excluded: "what if I moved to Paris" is
#   not a move, and a quoted line is someone else's;
# - dated events keep their date, resolved against the messages' timestamps when relative;
# - the summary rule is the AA protocol's: the previous chunk's summary comes in, an updated
#   summary of everything so far goes out, so the last chunk's summary covers the whole;
# - "one JSON object, nothing else" and the example keep answers parseable on servers that
#   enforce no schema; the word JSON must appear for OpenAI's json_object mode.
SYSTEM_PROMPT = """\
You extract long-term memories about the user from a conversation between a user and an \
assistant.

The input is a JSON object: "conversation" is a list of messages (role, content, and a \
timestamp when known); "previous_summary" is the summary of the earlier part of the same \
conversation, or null at its start.

Extract facts about the user that the user states or clearly confirms:
- identity: name, age, gender, nationality, languages;
- relationships: family, partners, friends, colleagues, pets, with their names;
- places: where the user lives, comes from, travels to;
- work and education: job, employer, field, school;
- preferences: likes, dislikes, habits, hobbies, diet;
- possessions: what the user owns;
- plans and goals: what the user intends to do, with when;
- health: conditions, allergies, medication, fitness;
- dated events: what happened to the user and when (give the date; resolve "yesterday" \
against the message's timestamp when there is one).

Do not extract:
- what the assistant said, suggested or knows, unless the user confirms it about themself;
- hypotheticals, wishes phrased as questions, jokes, role-play, or quoted text;
- general knowledge, opinions about the conversation itself, or anything not about the user \
or the people and things in the user's life.

Write each fact as a triple: subject (name and type), predicate, object (name and type). \
The user is the subject {"name": "user", "type": "person"}; a fact about someone in the \
user's life has that person as subject. Predicates are short snake_case verb phrases \
(lives_in, works_as, has_sister, is_allergic_to, plans_to_visit). Names are as written in \
the conversation; one fact per triple; no duplicates. No facts: an empty list.

"summary": a few sentences covering the previous summary and this part of the conversation \
together, so it describes everything so far.
"attributes": short labels for what the assistant does for the user here (e.g. \
"travel planning", "coding help"); may be empty.

Answer with one JSON object and nothing else.\
"""

_EXAMPLE = ('{"triples": [{"subject": {"name": "user", "type": "person"}, "predicate": '
            '"lives_in", "object": {"name": "Lisbon", "type": "place"}}], "summary": "The '
            'user, who lives in Lisbon, asked for restaurant ideas.", "attributes": '
            '["recommendations"]}')


def system_prompt(mode: str = "json_schema") -> str:
    """The system message for ``mode``: :data:`SYSTEM_PROMPT`, plus the schema and an example
    in plain ``json_object`` mode, where the server enforces no schema."""
    _check_mode(mode)
    if mode != "json_object":
        return SYSTEM_PROMPT
    return (f"{SYSTEM_PROMPT}\n\nThe JSON object follows this JSON schema:\n"
            f"{json.dumps(EXTRACTION_SCHEMA, separators=(',', ':'))}\nExample: {_EXAMPLE}")


def response_format(mode: str) -> dict[str, Any]:
    """The ``response_format`` field for ``mode`` (one of :data:`MODES`)."""
    _check_mode(mode)
    if mode == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "memories", "strict": True, "schema": EXTRACTION_SCHEMA}}
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": EXTRACTION_SCHEMA}
    return {"type": "json_object"}


def next_mode(mode: str) -> str | None:
    """The mode to try when a server refuses ``mode``; None after the last."""
    index = MODES.index(mode)
    return MODES[index + 1] if index + 1 < len(MODES) else None


def conversation_text(messages: tuple[Message, ...] | list[Message],
                      summary: str | None) -> str:
    """The user message: the chunk and the previous summary as one JSON document, which a
    model reads as well as a transcript and a server can read back exactly."""
    rows = []
    for m in messages:
        row = {"role": m.role, "content": m.content}
        if m.timestamp is not None:
            row["timestamp"] = (m.timestamp.isoformat() if hasattr(m.timestamp, "isoformat")
                                else str(m.timestamp))
        rows.append(row)
    return json.dumps({"previous_summary": summary, "conversation": rows}, ensure_ascii=False)


def build_request(request: AugmentationRequest, *, model: str, mode: str = "json_schema",
                  temperature: float = 0.0, max_tokens: int = 2048) -> dict[str, Any]:
    """The chat-completions request body for one chunk.

    Only the fields every OpenAI-compatible server knows are sent (some reject unknown ones).
    Entity and process ids are not sent: the model needs the words, not who they belong to.
    """
    return {
        "model": model,
        "messages": [{"role": "system", "content": system_prompt(mode)},
                     {"role": "user", "content": conversation_text(request.messages,
                                                                    request.summary)}],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "response_format": response_format(mode),
    }


def encode_request(body: dict[str, Any]) -> bytes:
    """A request body as compact UTF-8 JSON."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def prompt_characters(body: dict[str, Any]) -> int:
    """Characters of prompt text in a request body (its messages' contents)."""
    return sum(len(m["content"]) for m in body["messages"])


def prompt_overhead_characters(mode: str = "json_schema") -> int:
    """Characters a request adds around the conversation's own text: the system prompt, the
    schema (in the prompt or in ``response_format``) and the JSON framing of an empty chunk.

    Example:
        >>> prompt_overhead_characters("json_object") > prompt_overhead_characters() > 2000
        True
    """
    framing = conversation_text((), None)
    schema = (len(json.dumps(response_format(mode), separators=(",", ":")))
              if mode != "json_object" else 0)
    return len(system_prompt(mode)) + len(framing) + schema


def message_overhead_characters(role: str = "assistant", *, timestamp: bool = False) -> int:
    """Characters the JSON framing adds around one message's content in the user message
    (``{"role": ..., "content": ...}``, its timestamp when it has one, and a separator;
    escapes inside the content aside).

    Example:
        >>> message_overhead_characters("user"), message_overhead_characters(timestamp=True)
        (33, 80)
    """
    row = {"role": role, "content": ""}
    if timestamp:
        row["timestamp"] = "2024-01-01T00:00:00+00:00"
    return len(json.dumps(row, ensure_ascii=False)) + 2


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown structured-output mode {mode!r}; use one of "
                         f"{', '.join(MODES)}")


# -- the answer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """A checked chat-completions answer.

    ``extraction.usage`` is the answer's ``usage`` (None when the server sent none);
    ``warnings`` name each triple dropped as unusable; ``content`` is the model's text.
    """

    extraction: Extraction
    warnings: tuple[str, ...]
    finish_reason: str | None
    content: str


class _Malformed(Exception):
    """An answer with nothing usable in it (the message says why)."""


def parse_answer(data: bytes, redact=lambda text: text, context: dict | None = None
                 ) -> ChatAnswer:
    """Check a 200 chat-completions body and turn it into an extraction.

    ``choices[0].message.content`` is read; ``<think>...</think>`` blocks and code fences
    around it are dropped, and the first JSON object in it is taken. A triple that is not
    usable (a name empty or not a string, a type not a string, an empty predicate) is
    dropped with a warning; the others are kept. Every string is passed through ``redact``.

    Raises:
        TransientError: malformed (retried, then failed): not JSON, no choices, an answer cut
            at ``max_tokens`` (``finish_reason: "length"``), no JSON object in the content,
            or one without a ``triples`` list.

    Example:
        >>> body = {"choices": [{"finish_reason": "stop", "message": {"content":
        ...     '```json\\n{"triples": [], "summary": "hi", "attributes": []}\\n```'}}]}
        >>> parse_answer(json.dumps(body).encode()).extraction.summary
        'hi'
    """
    try:
        return _answer(data, redact)
    except _Malformed as exc:
        raise TransientError(f"malformed chat completion ({exc})",
                             **(context or {})) from exc


def _answer(data: bytes, redact) -> ChatAnswer:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _Malformed("the body is not JSON") from exc
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Malformed("no choices in the answer")
    finish = choices[0].get("finish_reason")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts, as some servers answer: the text ones
        content = "".join(part.get("text", "") for part in content
                          if isinstance(part, dict) and part.get("type") == "text"
                          and isinstance(part.get("text"), str))
    if finish == "length":
        raise _Malformed("the model's answer was cut at max_tokens (finish_reason "
                         "'length'); raise max_tokens, or send shorter chunks")
    if not isinstance(content, str):
        raise _Malformed("choices[0].message.content is not a string")
    found = find_json_object(content)
    if found is None:
        raise _Malformed(f"no JSON object in the model's answer: {redact(content[:120])!r}")
    triples_in = found.get("triples")
    if not isinstance(triples_in, list):
        raise _Malformed("the JSON object has no 'triples' list")
    triples, warnings = [], []
    for index, value in enumerate(triples_in):
        triple, problem = check_triple(value, redact)
        if triple is None:
            warnings.append(f"triple {index} dropped: {problem}")
        else:
            triples.append(triple)
    summary = found.get("summary")
    attributes = found.get("attributes")
    extraction = Extraction(
        triples=tuple(triples), facts=tuple(t.fact for t in triples),
        summary=redact(summary) if isinstance(summary, str) and summary.strip() else None,
        attributes=tuple(redact(a) for a in attributes if isinstance(a, str) and a.strip())
        if isinstance(attributes, list) else (),
        usage=parse_usage(body.get("usage")))
    return ChatAnswer(extraction=extraction, warnings=tuple(warnings), finish_reason=finish,
                      content=content)


_THINK = re.compile(r"<think>.*?(</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_MAX_STARTS = 50  # a content with this many unparseable "{" in a row has nothing for us


def find_json_object(content: str) -> dict | None:
    """The JSON object in a model's answer, past ``<think>`` blocks and code fences.

    Example:
        >>> find_json_object('<think>hmm {no}</think>Here: ```json\\n{"a": 1}\\n```')
        {'a': 1}
    """
    text = _THINK.sub("", content)
    fenced = _FENCE.search(text)
    candidates = ([fenced.group(1)] if fenced else []) + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        for _ in range(_MAX_STARTS):
            if start < 0:
                break
            try:
                value, _end = decoder.raw_decode(candidate, start)
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    return None


def check_triple(value: Any, redact=lambda text: text) -> tuple[Triple | None, str]:
    """``(Triple, "")`` for a usable triple, else ``(None, what is wrong)``.

    A missing type becomes ``"unknown"`` (as in the AA protocol); numbers as names become
    strings (an age, a year). A name with no letter or digit, and a triple about the
    assistant, are refused (what a small model writes when it loses the thread).

    Example:
        >>> check_triple({"subject": {"name": "user"}, "predicate": "", "object": {"name": 3}})
        (None, 'predicate is empty')
    """
    if not isinstance(value, dict):
        return None, f"a {type(value).__name__}, not an object"
    ends = {}
    for end in ("subject", "object"):
        node = value.get(end)
        if not isinstance(node, dict):
            return None, f"{end} is not an object"
        name = node.get("name")
        if isinstance(name, (int, float)) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str) or not name.strip():
            return None, f"{end}.name is {_what(name)}"
        if not any(c.isalnum() for c in name):  # "{", "...": a model's broken output
            return None, f"{end}.name {name.strip()[:20]!r} has no letter or digit"
        kind = node.get("type")
        if kind is None or (isinstance(kind, str) and not kind.strip()):
            kind = "unknown"
        if not isinstance(kind, str):
            return None, f"{end}.type is {_what(kind)}"
        ends[end] = (redact(name.strip()), redact(kind.strip()))
    predicate = value.get("predicate")
    if not isinstance(predicate, str) or not predicate.strip():
        return None, f"predicate is {_what(predicate)}"
    # Memories are about the user; small models also write down the assistant's lines.
    if ends["subject"][0].lower() == "assistant":
        return None, "about the assistant, not the user"
    return Triple(subject_name=ends["subject"][0], subject_type=ends["subject"][1],
                  predicate=redact(predicate.strip()), object_name=ends["object"][0],
                  object_type=ends["object"][1]), ""


def _what(value: Any) -> str:
    if isinstance(value, str):
        return "empty"
    return "missing" if value is None else f"a {type(value).__name__}, not a string"


# Counts beyond this are a broken server's, not tokens (a database column would overflow).
_MAX_TOKENS = 2 ** 40


def parse_usage(value: Any) -> Usage | None:
    """``usage`` of an answer as a :class:`Usage`; None when absent or unreadable."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < _MAX_TOKENS
               for n in (prompt, completion)):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


# -- the server side --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a server reads from a chat-completions request built by :func:`build_request`."""

    model: str
    mode: str | None  # one of MODES, or None when no response_format was asked for
    messages: list[dict]  # the conversation: dicts with "role" and "content"
    summary: str | None
    prompt_characters: int
    body: dict  # the whole request, as sent


def request_mode(body: dict) -> str | None:
    """The structured-output mode a request asks for (None: no ``response_format``)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        return "json_schema"
    if fmt.get("type") == "json_object":
        return "json_object_schema" if "schema" in fmt else "json_object"
    return None


def parse_request(raw: bytes) -> tuple[ChatRequest | None, str | None]:
    """Read a chat-completions request: ``(request, None)``, or ``(None, problem)`` naming
    what is wrong (a server answers 400 with it)."""
    body, problem = read_json_object(raw)
    if problem:
        return None, problem
    messages = body.get("messages")
    if not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
        return None, "messages must be a non-empty list of {role, content}"
    if not isinstance(body.get("model"), str):
        return None, "model is required"
    try:
        document = json.loads(messages[-1]["content"])
        conversation = document["conversation"]
        summary = document["previous_summary"]
    except (ValueError, KeyError, TypeError):
        return None, "the last message is not a conversation document from build_request"
    if not (isinstance(conversation, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in conversation)):
        return None, "conversation needs messages with string role and content"
    return ChatRequest(model=body["model"], mode=request_mode(body), messages=conversation,
                       summary=summary if isinstance(summary, str) else None,
                       prompt_characters=sum(len(m["content"]) for m in messages),
                       body=body), None


def answer_content(extraction: Extraction) -> dict[str, Any]:
    """An extraction as the JSON object :data:`EXTRACTION_SCHEMA` describes."""
    return {"triples": [{"subject": {"name": t.subject_name, "type": t.subject_type},
                         "predicate": t.predicate,
                         "object": {"name": t.object_name, "type": t.object_type}}
                        for t in extraction.triples],
            "summary": extraction.summary or "",
            "attributes": list(extraction.attributes)}


def completion(content: str, *, model: str, finish_reason: str = "stop",
               usage: Usage | None = None) -> dict[str, Any]:
    """A chat-completions answer carrying ``content`` (``usage`` left out when None)."""
    body: dict[str, Any] = {
        "id": "chatcmpl-memori-nb", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content}}]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage.prompt_tokens,
                         "completion_tokens": usage.completion_tokens,
                         "total_tokens": usage.total_tokens}
    return body
