"""Turn raw conversations into :class:`Conversation` objects, or say what is wrong.

The one set of message rules every reader goes through (DataFrames, seed JSON, JSONL,
Parquet/CSV, chat exports): readers only turn their records into raw conversations, each
message with a location (``row 1532``, ``line 7``, ``messages[3]``), and this module judges
them. Pure functions: no I/O.

A raw conversation is a dict: ``id`` (required), ``messages`` (required: dicts with
``role``, ``content``, optional ``timestamp`` and ``where``), and optionally ``title``,
``created_at`` (the time of messages that have none), ``where`` and ``warnings`` (what the
reader left out or repaired), and ``locate``: a function from a message's position to its
location, for readers that would rather not write one per message. The shapes of common formats are read as well: ShareGPT's
``conversations`` of ``{"from", "value"}``, and LangChain's ``{"type", "data": {"content"}}``
messages.

The rules, leniently where the data is still right:

- roles are matched without case or surrounding space; ``human`` is ``user``; ``ai``,
  ``gpt``, ``bot``, ``model``, ``chatbot`` are ``assistant``; ``developer`` is ``system``;
  ``tool`` and ``function`` messages are left out with a warning; ``role_map`` adds more;
- an empty message (no content, or only whitespace) is left out with a warning; a
  conversation with nothing left fails;
- content may be a list of text parts (``[{"type": "text", "text": ...}]``): they are joined;
- a timestamp that cannot be read is a warning, and the message keeps no time;
- ids lose surrounding whitespace (a warning says so); a whole number is read as its
  decimal text (:func:`id_text`, the same in every reader);
- text that cannot be stored (lone surrogates, NUL) is made safe with a warning.

Everything else fails the conversation with a reason naming it and the field. Warnings read
``"<kind> (<detail>)"``, so they can be counted by kind.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import chain
from operator import attrgetter
from typing import Any

from .models import (ROLES, UNSTORABLE, Conversation, Extraction, Message, SeedData,
                     Triple, new_message, storable)
from .timestamps import TimestampEvidence, TimestampRule, read_timestamp

_MAX_PROBLEMS_LISTED = 3
_MAX_DETAILS_PER_KIND = 3

#: Role names (lower-cased) and what they mean. ``None``: left out, with a warning.
ROLE_ALIASES: dict[str, str | None] = {
    "user": "user", "human": "user", "customer": "user",
    "assistant": "assistant", "ai": "assistant", "gpt": "assistant", "bot": "assistant",
    "model": "assistant", "chatbot": "assistant",
    # ShareGPT's other assistants, and its function-calling turns.
    "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "system": "system", "developer": "system",
    "tool": None, "function": None, "ipython": None, "function_call": None,
    "observation": None,
}
_FAST_ROLES = frozenset(ROLES)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How one source's records are read: its timestamp rule and extra role names.

    ``role_map`` maps role names (any case) to ``user``, ``assistant``, ``system``, or to
    None to leave such messages out.
    """

    timestamps: TimestampRule = TimestampRule()
    role_map: Mapping[str, str | None] | None = None
    roles: Mapping[str, str | None] = field(default_factory=lambda: ROLE_ALIASES)

    def __post_init__(self) -> None:
        if self.role_map:
            merged = dict(ROLE_ALIASES)
            for name, role in self.role_map.items():
                if role is not None and role not in ROLES:
                    from .errors import ConfigurationError
                    raise ConfigurationError(f"role_map maps {name!r} to {role!r}; map roles to "
                                             f"one of {', '.join(ROLES)}, or to None to leave "
                                             f"them out")
                merged[str(name).strip().lower()] = role
            object.__setattr__(self, "roles", merged)


DEFAULT_OPTIONS = ReadOptions()


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalid:
    """A conversation that cannot be sent. ``conversation_id`` is ``"#<index>"`` without an id."""

    conversation_id: str
    index: int
    reason: str


def safe_text(text: str) -> tuple[str, bool]:
    """``text`` with what no store can hold (lone surrogates, NUL) replaced by U+FFFD;
    and whether anything was replaced."""
    if storable(text):
        return text, False
    return UNSTORABLE.sub("\ufffd", text), True


_TRIPLE_TEXTS = attrgetter("subject_name", "subject_type", "predicate", "object_name",
                           "object_type")


def safe_extraction(extraction: Extraction) -> tuple[Extraction, bool]:
    """A backend's answer with unstorable characters replaced in every text; and whether
    any were (a model can answer with a lone surrogate or a NUL as well as a user can)."""
    texts = [extraction.summary or "", *extraction.facts, *extraction.attributes,
             *chain.from_iterable(map(_TRIPLE_TEXTS, extraction.triples))]
    if storable("\n".join(texts)):  # one scan in C for the whole answer
        return extraction, False
    clean = lambda text: safe_text(text)[0]  # noqa: E731
    return Extraction(
        triples=tuple(Triple(subject_name=clean(t.subject_name),
                             subject_type=clean(t.subject_type), predicate=clean(t.predicate),
                             object_name=clean(t.object_name), object_type=clean(t.object_type))
                      for t in extraction.triples),
        facts=tuple(map(clean, extraction.facts)),
        summary=clean(extraction.summary) if extraction.summary is not None else None,
        attributes=tuple(map(clean, extraction.attributes))), True


def safe_result(result: Any) -> Any:
    """A ConversationResult with every text made storable (ids, error, summary and
    warnings can all carry text from the input or a backend)."""
    texts = [result.conversation_id, result.entity_id, result.error or "",
             result.summary or "", *result.warnings]
    if storable("\n".join(texts)):
        return result
    clean = lambda text: safe_text(text)[0] if text is not None else None  # noqa: E731
    return replace(result, conversation_id=clean(result.conversation_id),
                   entity_id=clean(result.entity_id), error=clean(result.error),
                   summary=clean(result.summary),
                   warnings=tuple(clean(w) for w in result.warnings))


def id_text(value: Any) -> str | None:
    """An id value as every reader reads it: a string as it is; an integer, or a float of a
    whole number (a numeric column with gaps holds floats), as its decimal text (``7`` and
    ``7.0`` are ``"7"``, as in a CSV); None for anything else (a bool is no id)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(value))
    return None


def conversation_label(raw: Any, index: int) -> str:
    """The id to report a raw conversation under: its id if usable, else ``#<index>``."""
    if isinstance(raw, Conversation):
        return raw.id
    if isinstance(raw, dict):
        cid = id_text(raw.get("id"))
        if cid is not None and cid.strip():
            return safe_text(cid.strip())[0]
    return f"#{index}"


def parse_conversation(raw: Any, index: int,
                       options: ReadOptions = DEFAULT_OPTIONS) -> Conversation | Invalid:
    """Validate one raw conversation (see the module docstring), or pass a Conversation on.

    Args:
        raw: ``{"id": str, "messages": [{"role", "content", "timestamp"?}, ...], ...}``.
        index: its position in the input, used to name it when it has no id.
        options: the source's timestamp rule and role names.

    Returns:
        A :class:`Conversation` (its ``warnings`` say what was left out or repaired), or an
        :class:`Invalid` whose reason names the conversation and the field.

    Example:
        >>> parse_conversation({"id": "c1", "messages": []}, 0).reason
        "conversation 'c1': messages is empty"
    """
    if isinstance(raw, Invalid):
        return raw  # a source already found this record unusable and said why
    if isinstance(raw, Conversation):
        return raw if raw.messages else _invalid(raw.id, index, "messages is empty")
    label = conversation_label(raw, index)
    if not isinstance(raw, dict):
        return _invalid(label, index, f"expected an object with 'id' and 'messages', "
                                      f"got {type(raw).__name__}")
    where = f"{raw['where']}: " if raw.get("where") else ""
    cid = raw.get("id")
    if cid is None:
        return _invalid(label, index, f"{where}missing 'id'")
    if not isinstance(cid, str):  # a number is read as its text, as in every reader
        cid = id_text(cid)
        if cid is None:
            return _invalid(label, index, f"{where}'id' must be a non-empty string or an "
                                          f"integer, got {_show(raw.get('id'))}")
    if not cid.strip():
        return _invalid(label, index, f"{where}'id' must be a non-empty string, got {cid!r}")
    warnings: list[str] = list(raw.get("warnings") or ())
    if cid != cid.strip():
        warnings.append(f"id whitespace trimmed ({cid!r})")
    cid, changed = safe_text(cid.strip())
    if changed:
        warnings.append(f"unstorable characters replaced (id {label!r})")
    if "messages" not in raw and "conversations" not in raw:
        return _invalid(label, index, f"{where}missing 'messages'")
    raw_messages = raw["messages"] if "messages" in raw else raw["conversations"]
    if not isinstance(raw_messages, (list, tuple)):
        return _invalid(label, index, f"{where}'messages' must be a list, "
                                      f"got {type(raw_messages).__name__}")
    if not raw_messages:
        return _invalid(label, index, f"{where}messages is empty")
    messages, problems = parse_messages(raw_messages, options, warnings,
                                        fallback_time=raw.get("created_at"),
                                        locate=raw.get("locate"))
    if problems:
        more = len(problems) - _MAX_PROBLEMS_LISTED
        listed = "; ".join(problems[:_MAX_PROBLEMS_LISTED])
        return _invalid(label, index, listed + (f"; and {more} more" if more > 0 else ""))
    if not messages:
        return _invalid(label, index, f"nothing left to send "
                                      f"({summarize_warnings(warnings, details=False)})")
    title = raw.get("title")
    if isinstance(title, str):
        title, changed = safe_text(title)
        if changed:
            warnings.append(f"unstorable characters replaced (title of {label!r})")
    else:
        title = None
    return Conversation(id=cid, messages=messages, title=title,
                        warnings=tuple(group_warnings(warnings)))


def parse_messages(raw_messages: Iterable[Any], options: ReadOptions = DEFAULT_OPTIONS,
                   warnings: list[str] | None = None, *, fallback_time: Any = None,
                   locate: Callable[[int], str] | None = None
                   ) -> tuple[tuple[Message, ...], list[str]]:
    """Validate raw messages: the messages kept, and the problems that fail them.

    What is left out or repaired is appended to ``warnings``.
    """
    warnings = warnings if warnings is not None else []
    rule = options.timestamps
    fallback = None
    if fallback_time is not None:
        fallback = read_timestamp(fallback_time, rule)
        if fallback is None:
            warnings.append(f"unreadable timestamp left empty (created_at {_show(fallback_time)})")
    messages: list[Message] = []
    problems: list[str] = []
    # Roles taken as they are (a role_map may remap even "system").
    fast_roles = _FAST_ROLES if options.role_map is None else frozenset(
        role for role in ROLES if options.roles.get(role) == role)
    for position, raw in enumerate(raw_messages):
        # The common case first: a clean dict costs a few lookups and one constructor.
        if type(raw) is dict:
            role, content = raw.get("role"), raw.get("content")
            # (Not blank: checked without a stripped copy.)
            if (type(role) is str and role in fast_roles and type(content) is str
                    and content and not content.isspace() and storable(content)):
                stamp = given = raw.get("timestamp")
                if stamp is None:
                    stamp = fallback
                elif type(stamp) is not datetime or stamp.tzinfo is not timezone.utc:
                    stamp = read_timestamp(stamp, rule)  # None: the slow path warns
                if stamp is not None or given is None:
                    messages.append(new_message(role, content, stamp))
                    continue
            where = raw.get("where") or (locate(position) if locate else f"messages[{position}]")
            message = _parse_message(raw, where, options, warnings, problems, fallback)
            if message is not None:
                messages.append(message)
        elif isinstance(raw, Message):
            messages.append(raw)
        else:
            where = locate(position) if locate else f"messages[{position}]"
            problems.append(f"{where} must be an object with 'role' and "
                            f"'content', got {type(raw).__name__}")
    return tuple(messages), problems


def _parse_message(raw: dict, where: str, options: ReadOptions, warnings: list[str],
                   problems: list[str], fallback: datetime | None) -> Message | None:
    raw = _standard_shape(raw)
    role_value = raw.get("role")
    if "role" not in raw or _missing(role_value):
        problems.append(f"{where}: role is missing")
        return None
    if not isinstance(role_value, str):
        problems.append(f"{where}: role must be a string, got {type(role_value).__name__} "
                        f"{_show(role_value)}")
        return None
    name = role_value.strip().lower()
    if name not in options.roles:
        problems.append(f"{where}: role {role_value!r} is not one of {', '.join(ROLES)} "
                        f"(nor an alias such as human, ai, bot, tool); map it with "
                        f"role_map={{{name!r}: 'user'}}")
        return None
    role = options.roles[name]
    if role is None:
        warnings.append(f"{name} message left out ({where})")
        return None
    content = raw.get("content")
    if isinstance(content, (list, tuple)):
        content = _join_parts(content)
    if content is not None and not isinstance(content, str) and not _missing(content):
        problems.append(f"{where}: content must be text, got {type(content).__name__} "
                        f"{_show(content)}")
        return None
    if content is None or _missing(content) or not content.strip():
        warnings.append(f"empty message left out ({where})")
        return None
    content, changed = safe_text(content)
    if changed:
        warnings.append(f"unstorable characters replaced ({where})")
    timestamp = fallback
    stamp = raw.get("timestamp")
    if stamp is not None and not _missing(stamp):
        timestamp = read_timestamp(stamp, options.timestamps)
        if timestamp is None:
            warnings.append(f"unreadable timestamp left empty ({where}: {_show(stamp)})")
            timestamp = fallback
    return Message(role=role, content=content, timestamp=timestamp)


def _standard_shape(raw: dict) -> dict:
    """A message of another common shape as ``{"role", "content", ...}``: ShareGPT's
    ``{"from", "value"}``, LangChain's ``{"type", "data": {"content"}}``."""
    if "role" in raw:
        return raw
    if "from" in raw:
        return {**raw, "role": raw["from"], "content": raw.get("value", raw.get("content"))}
    data = raw.get("data")
    if "type" in raw and isinstance(data, dict):
        return {**raw, "role": raw["type"], "content": data.get("content")}
    return raw


def derived_id(messages: Any) -> str:
    """A stable id for a conversation that has none (OpenAI fine-tuning files, datasets):
    from its messages (null fields left out, so a JSONL line, a Parquet struct and a
    DataFrame cell of one conversation get one id), the same on every run."""
    if isinstance(messages, (list, tuple)):
        messages = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict)
                    else m for m in messages]
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str,
                                       ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return f"sha256:{digest.hexdigest()[:16]}"


def _join_parts(parts: list | tuple) -> str | None:
    """Text of a list of content parts (strings, or dicts with ``text``); None if none."""
    texts = [p if isinstance(p, str) else p.get("text") for p in parts
             if isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("text"), str))]
    return "\n".join(texts) if texts else None


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA: a cell with no value."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def warning_kind(warning: str) -> str:
    """The kind of a warning: its text before the parenthesised detail."""
    return warning.split(" (", 1)[0]


def group_warnings(warnings: list[str]) -> list[str]:
    """Warnings with many of one kind folded: ``"empty message left out (3: row 1, ...)"``."""
    by_kind: dict[str, list[str]] = {}
    for warning in warnings:
        kind, _, detail = warning.partition(" (")
        by_kind.setdefault(kind, []).append(detail[:-1] if detail.endswith(")") else detail)
    out = []
    for kind, details in by_kind.items():
        if len(details) == 1:
            out.append(f"{kind} ({details[0]})" if details[0] else kind)
            continue
        shown = ", ".join(d for d in details[:_MAX_DETAILS_PER_KIND] if d)
        more = ", ..." if len(details) > _MAX_DETAILS_PER_KIND else ""
        out.append(f"{kind} ({len(details)}: {shown}{more})")
    return out


def count_warnings(warnings: Iterable[str]) -> Counter:
    """How many warnings of each kind (a folded warning counts for its number)."""
    counts: Counter = Counter()
    for warning in warnings:
        kind, _, detail = warning.partition(" (")
        number = detail.split(":", 1)[0]
        counts[kind] += int(number) if number.isdigit() and ":" in detail else 1
    return counts


def summarize_warnings(warnings: Iterable[str], *, details: bool = True) -> str:
    """One line for a list of warnings: ``"2 empty message left out, 1 tool message ..."``."""
    if details:
        return "; ".join(group_warnings(list(warnings)))
    return ", ".join(f"{kind}: {n}" for kind, n in count_warnings(warnings).items())


def find_duplicate_ids(raw_conversations: Iterable[Any]) -> dict[str, list[int]]:
    """Ids used by more than one conversation, with every position they appear at."""
    # Counted in C first: most inputs have no duplicate, and then no position is listed.
    ids = [raw.get("id") if type(raw) is dict else raw.id if isinstance(raw, Conversation)
           else raw.get("id") if isinstance(raw, dict) else None for raw in raw_conversations]
    ids = [cid.strip() if isinstance(cid, str) else id_text(cid) for cid in ids]
    twice = {cid for cid, n in Counter(ids).items() if n > 1 and cid}
    positions: dict[str, list[int]] = {}
    if twice:
        for i, cid in enumerate(ids):
            if cid in twice:
                positions.setdefault(cid, []).append(i)
    return positions


def duplicate_reason(conversation_id: str, positions: list[int]) -> str:
    where = ", ".join(str(p) for p in positions)
    return (f"conversation {conversation_id!r}: duplicate id, used by {len(positions)} "
            f"conversations (positions {where}); ids must be unique per entity")


def repeated_id_reason(conversation_id: str, entity_id: str, first: int, position: int) -> str:
    """Why a later copy of an entity's conversation id, in another record of the same run
    (another line of a JSONL file, another object of a seed JSON list), is not sent: the
    first may be sent already, and the store keeps one conversation per id. Both copies are
    named by their position in the run's input (0 for its first conversation)."""
    return (f"conversation {conversation_id!r}: duplicate id for entity {entity_id!r}, first "
            f"used at position {first} of the input; ids must be unique per entity, so this "
            f"copy (position {position}) is not sent")


def options_for(seed: SeedData) -> ReadOptions:
    """The seed's read options; for SeedData built in code without them, the timestamp rule
    is decided from its own conversations (they are all at hand)."""
    if seed.options is not None:
        return seed.options
    if seed.size is None:
        return DEFAULT_OPTIONS
    evidence = timestamp_evidence(seed.conversations)
    return ReadOptions(timestamps=evidence.rule(f"entity {seed.entity_id!r}"))


def timestamp_evidence(raw_conversations: Iterable[Any],
                       evidence: TimestampEvidence | None = None) -> TimestampEvidence:
    """What the times validation reads from raw conversations (the ``created_at`` and the
    message timestamps of those with a list of messages) say about day/month order, added
    to ``evidence`` (a new one by default)."""
    evidence = TimestampEvidence() if evidence is None else evidence
    for raw in raw_conversations:
        if isinstance(raw, dict) and isinstance(messages := raw.get("messages"), (list, tuple)):
            if (created := raw.get("created_at")) is not None:
                evidence.add(created)
            for message in messages:  # (most messages have no time: no call for them)
                if isinstance(message, dict) and (stamp := message.get("timestamp")) is not None:
                    evidence.add(stamp)
    return evidence


def check_conversations(seed: SeedData) -> Iterator[tuple[int, Conversation | Invalid]]:
    """Parse each conversation of ``seed`` in order, yielding ``(index, Conversation | Invalid)``.

    Every use of a duplicate id is invalid: for a list, all uses, naming every position
    (found before anything is yielded); for a stream, each use after the first.

    Raises:
        AmbiguousTimestampsError: the seed's dates could be read day/month or month/day.
    """
    options = options_for(seed)
    conversations = seed.conversations
    if seed.size is not None:
        duplicates = find_duplicate_ids(conversations)
        seen = None
    else:
        duplicates, seen = {}, {}
    for index, raw in enumerate(conversations):
        parsed = parse_conversation(raw, index, options)
        if isinstance(parsed, Conversation):
            if parsed.id in duplicates:
                parsed = Invalid(conversation_id=parsed.id, index=index,
                                 reason=duplicate_reason(parsed.id, duplicates[parsed.id]))
            elif seen is not None:
                if parsed.id in seen:
                    parsed = Invalid(conversation_id=parsed.id, index=index, reason=(
                        f"conversation {parsed.id!r}: duplicate id, first used at position "
                        f"{seen[parsed.id]}; ids must be unique per entity"))
                else:
                    seen[parsed.id] = index
        yield index, parsed


def _invalid(label: str, index: int, problem: str) -> Invalid:
    return Invalid(conversation_id=label, index=index,
                   reason=f"conversation {label!r}: {problem}")


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # JSON can nest deeper than repr can go
        return f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= 60 else text[:57] + "..."
