"""JSON Lines files, read line by line (the file is never read whole).

Two layouts, told apart by the first non-empty line:

* **one conversation per line**:
  ``{"id", "messages": [{"role", "content", "timestamp"?}, ...], "title"?, "entity_id"?,
  "process_id"?}``
* **one message per line**:
  ``{"conversation_id", "role", "content", "timestamp"?, "title"?, "entity_id"?,
  "process_id"?}``. The lines of one conversation must be **contiguous** (consecutive,
  blank lines aside) and are kept in file order; a conversation whose lines stop and start
  again further down is kept as first seen, and its later lines fail as "not contiguous"
  (to tell, the reader remembers each conversation id it has passed, about 100 bytes
  each). A broken line between two lines of one conversation makes that conversation fail,
  naming the line.

Each record's ``entity_id`` says whose it is; records without one belong to the
``entity_id`` argument. Consecutive records of the same entity (and process) make one
:class:`SeedData`, so a file sorted by entity streams as one SeedData per entity. A line that
cannot be used (not JSON, not an object, missing fields) fails on its own, named by its line
number, and the rest of the file goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidInputError
from ..models import ROLES, Conversation, Message, SeedData
from ..timestamps import read_timestamp as parse_timestamp
from ..validation import Invalid, parse_conversation
from ._runs import seed_runs

_ROLES = frozenset(ROLES)
_MAX_PROBLEMS_LISTED = 3
_LAYOUTS = ('one conversation per line {"id", "messages": [...]} or one message per line '
            '{"conversation_id", "role", "content"}')

Key = tuple[str, "str | None"]  # (entity_id, process_id)
Item = tuple[Key, "Conversation | Invalid"]


def read_jsonl(path: str | Path | IO | Iterable[str | bytes], *,
               entity_id: str | None = None) -> Iterator[SeedData]:
    """Stream a JSON Lines file as one :class:`SeedData` per run of same-entity records.

    Args:
        path: a ``.jsonl`` file; or an open file (text or binary) or any iterable of lines.
        entity_id: the entity of records that carry no ``entity_id`` of their own.

    Returns:
        An iterator of :class:`SeedData`, each with a lazy ``conversations`` iterator that
        pulls lines only as the seeding engine consumes them (like ``itertools.groupby``,
        moving to the next SeedData skips what is left of the current one, so read each
        SeedData's conversations before taking the next; reading them later raises). Items are
        :class:`Conversation`, or :class:`Invalid` for a record that cannot be used.

    Raises:
        InvalidInputError: the file is missing; its first non-empty line is not a JSON object
            of either layout; or a record has no ``entity_id`` and none was passed (for the
            first record up front, for later ones when they are reached).

    Example:
        >>> lines = ['{"conversation_id": "c1", "role": "user", "content": "Hi"}',
        ...          '{"conversation_id": "c1", "role": "assistant", "content": "Hello"}']
        >>> seed = next(read_jsonl(lines, entity_id="user-1"))
        >>> [m.content for m in next(iter(seed.conversations)).messages]
        ['Hi', 'Hello']
    """
    if entity_id is not None and (not isinstance(entity_id, str) or not entity_id.strip()):
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    name = str(path) if isinstance(path, (str, Path)) else getattr(path, "name", "input")
    lines = _numbered_lines(path, name)
    first = next(((number, line) for number, line in lines if line.strip()), None)
    if first is None:
        return iter(())
    number, line = first
    record, problem = _decode(line)
    if problem is not None or not isinstance(record, dict):
        lines.close()
        found = problem or f"it is a JSON {type(record).__name__}"
        raise InvalidInputError(f"{name}: not JSON Lines of conversations: line {number}: "
                                f"{found}; expected {_LAYOUTS}")
    if "messages" in record:
        reader = _ConversationLines(name, entity_id)
    elif "conversation_id" in record:
        reader = _MessageLines(name, entity_id)
    else:
        lines.close()
        keys = ", ".join(list(record)[:8]) or "no keys"
        raise InvalidInputError(f"{name}: not JSON Lines of conversations: line {number} has "
                                f"neither 'messages' nor 'conversation_id' (keys: {keys}); "
                                f"expected {_LAYOUTS}")
    try:
        key = reader.key_of(record, number)  # a missing entity fails now, before streaming
        if isinstance(key, str) and entity_id is None:
            raise InvalidInputError(f"{name}: line {number}: {key}")
    except InvalidInputError:
        lines.close()
        raise
    return seed_runs(reader.items(_chain_first(first, lines)))


def _chain_first(first: tuple[int, bytes | str],
                 rest: Iterator[tuple[int, bytes | str]]) -> Iterator[tuple[int, bytes | str]]:
    yield first
    yield from rest


def _numbered_lines(source: Any, name: str) -> Iterator[tuple[int, bytes | str]]:
    """``(line number, line)`` for every line; closes a file it opened when done."""
    if isinstance(source, (str, Path)):
        try:
            handle = open(source, "rb")
        except FileNotFoundError as exc:
            raise InvalidInputError(f"{name}: no such file") from exc
        except OSError as exc:
            raise InvalidInputError(f"{name}: cannot read the file ({exc})") from exc
        return _lines_of(handle, name, close=True)
    if isinstance(source, (bytes, dict)) or not isinstance(source, Iterable):
        raise InvalidInputError(f"read_jsonl takes a path, an open file or an iterable of "
                                f"lines, got {type(source).__name__}")
    return _lines_of(source, name, close=False)


def _lines_of(handle: Iterable, name: str, *, close: bool) -> Iterator[tuple[int, Any]]:
    try:
        yield from enumerate(handle, 1)
    except OSError as exc:
        raise InvalidInputError(f"{name}: cannot read the file ({exc})") from exc
    finally:
        if close:
            handle.close()


def _decode_object(line: bytes | str) -> tuple[Any, str | None]:
    """A line's JSON object, or the problem with it."""
    record, problem = _decode(line)
    if problem is None and not isinstance(record, dict):
        problem = f"expected a JSON object, got {type(record).__name__}"
    return record, problem


def _decode(line: bytes | str) -> tuple[Any, str | None]:
    """The line's JSON value, or a problem."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"


def _line_failure(number: int, problem: str, index: int) -> Invalid:
    return Invalid(conversation_id=f"line {number}", index=index,
                   reason=f"line {number}: {problem}")


class _Reader:
    """What both layouts share: resolving each record's entity and process."""

    def __init__(self, name: str, entity_id: str | None) -> None:
        self.name, self.default = name, entity_id
        self.last_key: Key | None = None
        self.run_index = 0

    def key_of(self, record: dict, number: int) -> Key | str:
        """``(entity_id, process_id)`` of a record, or a problem with them."""
        entity = record.get("entity_id")
        if entity is None:
            if self.default is None:
                raise InvalidInputError(
                    f"{self.name}: line {number} has no entity_id: pass --entity-id "
                    f"(entity_id=...) to say whose conversations the file holds")
            entity = self.default
        elif not isinstance(entity, str) or not entity.strip():
            return f"entity_id must be a non-empty string, got {entity!r}"
        process = record.get("process_id")
        if process is not None and (not isinstance(process, str) or not process.strip()):
            return f"process_id must be a non-empty string, got {process!r}"
        return (entity, process)

    def fallback_key(self) -> Key:
        """The key for a line whose own entity is unknown: the run it sits in."""
        if self.last_key is not None:
            return self.last_key
        return (self.default, None) if self.default is not None else ("", None)

    def emit(self, key: Key, item: Conversation | Invalid) -> Item:
        """Tag an item with its key, numbering it within its run of same-key items."""
        if key != self.last_key:
            self.last_key, self.run_index = key, 0
        if isinstance(item, Invalid) and item.index != self.run_index:
            item = Invalid(conversation_id=item.conversation_id, index=self.run_index,
                           reason=item.reason)
        self.run_index += 1
        return key, item


class _ConversationLines(_Reader):
    """Layout (a): one conversation per line."""

    def items(self, lines: Iterator[tuple[int, bytes | str]]) -> Iterator[Item]:
        for number, line in lines:
            if not line.strip():
                continue
            record, problem = _decode_object(line)
            if problem is not None:
                yield self.emit(self.fallback_key(), _line_failure(number, problem, 0))
                continue
            key = self.key_of(record, number)
            if isinstance(key, str):
                yield self.emit(self.fallback_key(), _line_failure(number, key, 0))
                continue
            cid = record.get("id")
            if not isinstance(cid, str) or not cid.strip():
                problem = "missing 'id'" if cid is None else (
                    f"'id' must be a non-empty string, got {cid!r}")
                yield self.emit(key, _line_failure(number, problem, 0))
                continue
            parsed = parse_conversation(record, 0)
            if isinstance(parsed, Invalid):
                parsed = Invalid(conversation_id=cid, index=0,
                                 reason=f"line {number}: {parsed.reason}")
            yield self.emit(key, parsed)


@dataclass(slots=True)
class _Pending:
    """The conversation being gathered from consecutive message lines."""

    cid: str
    key: Key
    first_line: int
    last_line: int
    messages: list[Message] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    title: str | None = None
    # Unreadable lines since the last good one: theirs if the conversation goes on after.
    gap: list[tuple[int, str]] = field(default_factory=list)
    earlier_run_ended: int | None = None  # set when the id was seen before (not contiguous)


class _MessageLines(_Reader):
    """Layout (b): one message per line, the lines of one conversation contiguous."""

    def __init__(self, name: str, entity_id: str | None) -> None:
        super().__init__(name, entity_id)
        # (entity, conversation id) -> last line of its run; to tell a reappearing id.
        self.seen: dict[tuple[str, str], int] = {}

    def items(self, lines: Iterator[tuple[int, bytes | str]]) -> Iterator[Item]:
        pending: _Pending | None = None
        for number, line in lines:
            if not line.strip():
                continue
            record, problem = _decode_object(line)
            cid = None
            if problem is None:
                cid = record.get("conversation_id")
                if isinstance(cid, int) and not isinstance(cid, bool):
                    cid = str(cid)
                if not isinstance(cid, str) or not cid.strip():
                    problem = "missing 'conversation_id'" if cid is None else (
                        f"'conversation_id' must be a non-empty string, got {cid!r}")
            if problem is not None:
                if pending is not None:
                    pending.gap.append((number, problem))
                else:
                    yield self.emit(self.fallback_key(), _line_failure(number, problem, 0))
                continue
            if pending is not None and cid == pending.cid:
                pending.problems.extend(f"line {n}: {p}" for n, p in pending.gap)
                pending.gap.clear()
                self._add(pending, record, number)
                continue
            if pending is not None:
                yield from self._finish(pending)
            key = self.key_of(record, number)
            if isinstance(key, str):
                pending = _Pending(cid, self.fallback_key(), number, number)
                pending.problems.append(f"line {number}: {key}")
            else:
                pending = _Pending(cid, key, number, number)
                pending.earlier_run_ended = self.seen.get((key[0], cid))
            self._add(pending, record, number)
        if pending is not None:
            yield from self._finish(pending)

    def _add(self, pending: _Pending, record: dict, number: int) -> None:
        pending.last_line = number
        if pending.title is None and isinstance(record.get("title"), str) and record["title"]:
            pending.title = record["title"]
        entity = record.get("entity_id", self.default)
        if entity != pending.key[0] and number != pending.first_line:
            pending.problems.append(f"line {number}: entity_id {entity!r} differs from "
                                    f"{pending.key[0]!r} on line {pending.first_line}")
            return
        role, content = record.get("role"), record.get("content")
        if not isinstance(role, str) or role not in _ROLES:
            pending.problems.append(
                f"line {number}: missing 'role'" if "role" not in record else
                f"line {number}: role {role!r} is not one of {', '.join(ROLES)}")
            return
        if not isinstance(content, str) or not content.strip():
            pending.problems.append(
                f"line {number}: missing 'content'" if "content" not in record else
                f"line {number}: content must be a string, got {type(content).__name__}"
                if not isinstance(content, str) else f"line {number}: content is empty")
            return
        timestamp = record.get("timestamp")
        if timestamp is not None:
            parsed = parse_timestamp(timestamp)
            if parsed is None:
                pending.problems.append(f"line {number}: timestamp {timestamp!r} is not a "
                                        f"date and time")
                return
            timestamp = parsed
        pending.messages.append(Message(role=role, content=content, timestamp=timestamp))

    def _finish(self, pending: _Pending) -> Iterator[Item]:
        cid = pending.cid
        where = (f"lines {pending.first_line}-{pending.last_line}"
                 if pending.last_line != pending.first_line else f"line {pending.first_line}")
        if pending.earlier_run_ended is not None:
            item = Invalid(conversation_id=cid, index=0, reason=(
                f"conversation {cid!r}: its messages are not contiguous (lines "
                f"{pending.earlier_run_ended} and {pending.first_line}); the lines of one "
                f"conversation must be consecutive, so {where} were not seeded"))
        elif pending.problems:
            more = len(pending.problems) - _MAX_PROBLEMS_LISTED
            listed = "; ".join(pending.problems[:_MAX_PROBLEMS_LISTED])
            item = Invalid(conversation_id=cid, index=0, reason=(
                f"conversation {cid!r}: {listed}" + (f"; and {more} more" if more > 0 else "")))
        else:
            item = Conversation(id=cid, messages=tuple(pending.messages), title=pending.title)
        if pending.earlier_run_ended is None:
            self.seen[(pending.key[0], cid)] = pending.last_line
        yield self.emit(pending.key, item)
        for number, problem in pending.gap:
            yield self.emit(pending.key, _line_failure(number, problem, 0))
