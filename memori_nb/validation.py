"""Turn raw conversation input into :class:`Conversation` objects, or say what is wrong.

Pure functions: no I/O. Every problem names the conversation (its id, or its position when
it has no usable id) and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .models import ROLES, Conversation, Message, SeedData

_ROLES = frozenset(ROLES)
_MAX_PROBLEMS_LISTED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalid:
    """A conversation that cannot be sent. ``conversation_id`` is ``"#<index>"`` without an id."""

    conversation_id: str
    index: int
    reason: str


def conversation_label(raw: Any, index: int) -> str:
    """The id to report a raw conversation under: its id if usable, else ``#<index>``."""
    if isinstance(raw, Conversation):
        return raw.id
    if isinstance(raw, dict):
        cid = raw.get("id")
        if isinstance(cid, str) and cid.strip():
            return cid
    return f"#{index}"


def parse_conversation(raw: Any, index: int) -> Conversation | Invalid:
    """Validate one raw conversation (a dict in the seed format, or a Conversation).

    Args:
        raw: ``{"id": str, "messages": [{"role", "content", "timestamp"?}, ...], "title"?}``.
        index: its position in the input, used to name it when it has no id.

    Returns:
        A :class:`Conversation`, or an :class:`Invalid` whose reason names the field.

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
    cid = raw.get("id")
    if cid is None:
        return _invalid(label, index, "missing 'id'")
    if not isinstance(cid, str) or not cid.strip():
        return _invalid(label, index, f"'id' must be a non-empty string, got {cid!r}")
    if "messages" not in raw:
        return _invalid(label, index, "missing 'messages'")
    raw_messages = raw["messages"]
    if not isinstance(raw_messages, (list, tuple)):
        return _invalid(label, index, f"'messages' must be a list, "
                                      f"got {type(raw_messages).__name__}")
    if not raw_messages:
        return _invalid(label, index, "messages is empty")
    messages, problems = parse_messages(raw_messages)
    if problems:
        more = len(problems) - _MAX_PROBLEMS_LISTED
        listed = "; ".join(problems[:_MAX_PROBLEMS_LISTED])
        return _invalid(label, index, listed + (f"; and {more} more" if more > 0 else ""))
    title = raw.get("title")
    return Conversation(id=cid, messages=messages, title=title if isinstance(title, str) else None)


def parse_messages(raw_messages: Iterable[Any]) -> tuple[tuple[Message, ...], list[str]]:
    """Validate raw messages; returns the messages and a list of problems (empty if none)."""
    messages = []
    problems = []
    for position, raw in enumerate(raw_messages):
        # The common case first: a well-formed dict costs four lookups and one constructor.
        if type(raw) is dict:
            role = raw.get("role")
            content = raw.get("content")
            if type(role) is str and role in _ROLES and type(content) is str and content and not content.isspace():
                timestamp = raw.get("timestamp")
                if timestamp is not None:
                    timestamp = parse_timestamp(timestamp)
                    if timestamp is None:
                        problems.append(f"messages[{position}].timestamp "
                                        f"{raw['timestamp']!r} is not a date and time")
                        continue
                messages.append(Message(role=role, content=content, timestamp=timestamp))
                continue
            problems.append(_message_problem(position, role, content, raw))
        elif isinstance(raw, Message):
            messages.append(raw)
        else:
            problems.append(f"messages[{position}] must be an object with 'role' and "
                            f"'content', got {type(raw).__name__}")
    return tuple(messages), problems


def parse_timestamp(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from an ISO 8601 string, epoch seconds or a datetime.

    Naive values are taken as UTC. Returns None when the value is not a date and time.

    Example:
        >>> parse_timestamp("2024-03-02T09:14:00Z").isoformat()
        '2024-03-02T09:14:00+00:00'
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _message_problem(position: int, role: Any, content: Any, raw: dict) -> str:
    where = f"messages[{position}]"
    if "role" not in raw:
        return f"{where} is missing 'role'"
    if not isinstance(role, str) or role not in _ROLES:
        return f"{where}.role {role!r} is not one of {', '.join(ROLES)}"
    if "content" not in raw:
        return f"{where} is missing 'content'"
    if not isinstance(content, str):
        return f"{where}.content must be a string, got {type(content).__name__}"
    return f"{where}.content is empty"


def find_duplicate_ids(raw_conversations: Iterable[Any]) -> dict[str, list[int]]:
    """Ids used by more than one conversation, with every position they appear at."""
    positions: dict[str, list[int]] = {}
    for i, raw in enumerate(raw_conversations):
        cid = raw.id if isinstance(raw, Conversation) else (
            raw.get("id") if isinstance(raw, dict) else None)
        if isinstance(cid, str) and cid.strip():
            positions.setdefault(cid, []).append(i)
    return {cid: where for cid, where in positions.items() if len(where) > 1}


def duplicate_reason(conversation_id: str, positions: list[int]) -> str:
    where = ", ".join(str(p) for p in positions)
    return (f"conversation {conversation_id!r}: duplicate id, used by {len(positions)} "
            f"conversations (positions {where}); ids must be unique per entity")


def check_conversations(seed: SeedData) -> Iterator[tuple[int, Conversation | Invalid]]:
    """Parse each conversation of ``seed`` in order, yielding ``(index, Conversation | Invalid)``.

    Every use of a duplicate id is invalid: for a list, all uses, naming every position
    (found before anything is yielded); for a stream, each use after the first.
    """
    conversations = seed.conversations
    if seed.size is not None:
        duplicates = find_duplicate_ids(conversations)
        seen = None
    else:
        duplicates, seen = {}, {}
    for index, raw in enumerate(conversations):
        parsed = parse_conversation(raw, index)
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
