"""JSON Lines files, read line by line (the file is never read whole).

Two layouts, told apart by the first record:

* **one conversation per line**:
  ``{"id"?, "messages": [{"role", "content", "timestamp"?}, ...], "title"?, "created_at"?,
  "entity_id"?, "process_id"?}``. OpenAI fine-tuning files and Hugging Face chat datasets
  (``{"messages": [...]}``, no id) and ShareGPT (``"conversations": [{"from", "value"}]``)
  are this layout; a line without ``id`` gets a stable one from its messages
  (:func:`memori_nb.validation.derived_id`), the same on every read. The conversation's
  ``created_at`` (or ``timestamp``, ``create_time``) is the time of messages without one.
* **one message per line**:
  ``{"conversation_id", "role", "content", "timestamp"?, "title"?, "entity_id"?,
  "process_id"?}``. The lines of one conversation must be **contiguous** (consecutive,
  blank lines aside) and are kept in file order; a conversation whose lines stop and start
  again further down is kept as first seen, and its later lines fail as "not contiguous"
  (to tell, the reader remembers each conversation id it has passed, about 120 bytes
  each). A broken line between two lines of one conversation makes that conversation fail,
  naming the line.

The reader only groups lines into raw conversations (each message named by its line);
:mod:`memori_nb.validation` judges them (roles, content, timestamps), as for every source.

Day/month order of numeric dates (``12.01.2024, 13:42:02``) is decided once for the file,
before streaming, by a quick scan of its ``timestamp``/``created_at``/``create_time`` values
(a regex over the raw text: about 2 s per GB, up to 8 when every time is such a date). It
reads them day first when some date proves it, and asks for ``dayfirst=`` /
``timestamp_format=`` when none does. For an iterable of lines (not a file) nothing is
scanned: dates that could be read both ways are left empty, with a warning, unless
``dayfirst=`` or ``timestamp_format=`` says how.

Each record's ``entity_id`` says whose it is; records without one belong to the
``entity_id`` argument. Consecutive records of the same entity (and process) make one
:class:`SeedData`, so a file sorted by entity streams as one SeedData per entity. A line that
cannot be used (not JSON, not an object, nested too deeply) fails on its own, named by its
line number, and the rest of the file goes on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidInputError
from ..models import SeedData
from ..timestamps import TimestampEvidence, TimestampRule, read_timestamp
from ..validation import Invalid, conversation_label, derived_id, id_text
from ._runs import add_counted, read_options, seed_runs

_MAX_PROBLEMS_LISTED = 3
_LAYOUTS = ('one conversation per line {"id"?, "messages": [...]} or one message per line '
            '{"conversation_id", "role", "content"}')
# Conversation-level times, in order of preference (and message times in layout (b)).
_TIME_KEYS = ("created_at", "timestamp", "create_time")
_TOO_DEEP = "JSON nested too deeply to read"
# A time field whose value starts with a numeric day/month date: the evidence for the rule.
# ("\/" is JSON's optional escape of "/".)
_DATE_FIELD = (r'"(?:timestamp|created_at|create_time)"\s*:\s*'
               r'"(\s*(\d{1,2}(?:[./-]|\\/)\d{1,2})(?:[./-]|\\/)(?:[^"\\]|\\/){0,40})')
_DATE_FIELDS = {bytes: re.compile(_DATE_FIELD.encode()), str: re.compile(_DATE_FIELD)}
_SCAN_CHUNK = 1 << 20

Key = tuple[str, "str | None"]  # (entity_id, process_id)
Item = tuple[Key, "dict | Invalid"]


def read_jsonl(path: str | Path | IO | Iterable[str | bytes], *,
               entity_id: str | None = None, dayfirst: bool | None = None,
               timestamp_format: str | None = None,
               role_map: Mapping[str, str | None] | None = None) -> Iterator[SeedData]:
    """Stream a JSON Lines file as one :class:`SeedData` per run of same-entity records.

    Args:
        path: a ``.jsonl`` file; or an open file (text or binary) or any iterable of lines.
        entity_id: the entity of records that carry no ``entity_id`` of their own.
        dayfirst: True when numeric dates are day/month/year, False for month/day/year;
            by default decided from the file's dates (see the module docstring).
        timestamp_format: a ``strptime`` format the file's text timestamps follow instead.
        role_map: more role names, e.g. ``{"agent": "assistant", "note": None}`` (None
            leaves such messages out).

    Returns:
        An iterator of :class:`SeedData`, each with a lazy ``conversations`` iterator that
        pulls lines only as the seeding engine consumes them (like ``itertools.groupby``,
        moving to the next SeedData skips what is left of the current one, so read each
        SeedData's conversations before taking the next; reading them later raises). Items are
        raw conversation dicts (validated when seeding), or :class:`Invalid` for a record
        that cannot be used.

    Raises:
        InvalidInputError: the file is missing; its first record is not a JSON object of
            either layout; a record has no ``entity_id`` and none was passed (for the first
            record up front, for later ones when they are reached); or the file's dates
            could be day/month or month/day and nothing says which
            (:class:`~memori_nb.timestamps.AmbiguousTimestampsError`).

    Example:
        >>> from memori_nb.validation import check_conversations
        >>> lines = ['{"conversation_id": "c1", "role": "user", "content": "Hi"}',
        ...          '{"conversation_id": "c1", "role": "assistant", "content": "Hello"}']
        >>> seed = next(read_jsonl(lines, entity_id="user-1"))
        >>> [m.content for m in next(check_conversations(seed))[1].messages]
        ['Hi', 'Hello']
    """
    if entity_id is not None and (not isinstance(entity_id, str) or not entity_id.strip()):
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    name = str(path) if isinstance(path, (str, Path)) else getattr(path, "name", "input")
    decide = dayfirst is None and timestamp_format is None
    evidence = None
    if decide and not isinstance(path, (str, Path)):
        evidence = _scan_handle(path)  # before its lines are read
    lines = _numbered_lines(path, name)
    try:
        first, record, deep = _first_record(lines, name)
        if first is None:
            if deep:
                raise InvalidInputError(f"{name}: not JSON Lines of conversations: line "
                                        f"{deep[0][0]}: {_TOO_DEEP}")
            return iter(())
        number = first[0]
        reader = _reader_for(record, number, name, entity_id)
        key = reader.key_of(record, number)  # a missing entity fails now, before streaming
        if isinstance(key, str) and entity_id is None:
            raise InvalidInputError(f"{name}: line {number}: {key}")
        if not isinstance(key, str):
            reader.last_key = key  # lines too deep to read before it belong to its run
        if decide and isinstance(path, (str, Path)) and Path(path).is_file():
            evidence = _scan_file(path)  # not a pipe: reading it twice would empty it
        options = read_options(evidence, name, dayfirst=dayfirst,
                               timestamp_format=timestamp_format, role_map=role_map)
        reader.rule = options.timestamps
    except BaseException:
        lines.close()
        raise
    return seed_runs(reader.items(_chain(deep, first, lines)), options)


def _reader_for(record: Any, number: int, name: str, entity_id: str | None) -> _Reader:
    """The reader for the layout the first record shows."""
    if not isinstance(record, dict):
        raise InvalidInputError(f"{name}: not JSON Lines of conversations: line {number}: "
                                f"it is a JSON {type(record).__name__}; expected {_LAYOUTS}")
    if "messages" in record or "conversations" in record:
        return _ConversationLines(name, entity_id)
    if "conversation_id" in record:
        return _MessageLines(name, entity_id)
    keys = ", ".join(list(record)[:8]) or "no keys"
    raise InvalidInputError(f"{name}: not JSON Lines of conversations: line {number} has "
                            f"neither 'messages' nor 'conversation_id' (keys: {keys}); "
                            f"expected {_LAYOUTS}")


def _first_record(lines: Iterator[tuple[int, Any]], name: str
                  ) -> tuple[tuple[int, Any] | None, Any, list[tuple[int, Any]]]:
    """The first record's ``(number, line)`` and its value, and the lines too deep to read
    before it (they fail on their own). Raises when the first line is not JSON."""
    deep = []
    for number, line in lines:
        if not line.strip():
            continue
        record, problem = decode_json(line)
        if problem is _TOO_DEEP:
            deep.append((number, line))
            continue
        if problem is not None:
            raise InvalidInputError(f"{name}: not JSON Lines of "
                                    f"conversations: line {number}: {problem}; expected "
                                    f"{_LAYOUTS}")
        return (number, line), record, deep
    return None, None, deep


def _chain(deep: list[tuple[int, Any]], first: tuple[int, Any],
           rest: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    yield from deep
    yield first
    yield from rest


# --- the timestamp rule, decided before streaming ------------------------------------------

def _scan_file(path: str | Path) -> TimestampEvidence:
    with open(path, "rb") as handle:
        return _scan(iter(lambda: handle.read(_SCAN_CHUNK), b""))


def _scan_handle(handle: Any) -> TimestampEvidence | None:
    """Evidence from an open file that can seek back (read, then rewound); None otherwise."""
    try:
        if not handle.seekable():
            return None
        start = handle.tell()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        return _scan(iter(lambda: handle.read(_SCAN_CHUNK), handle.read(0)))
    finally:
        handle.seek(start)


def _scan(chunks: Iterable[bytes | str]) -> TimestampEvidence:
    """What the numeric day/month dates of the time fields in a JSONL text say, without
    parsing the JSON. Counted by their day/month part, so each kind is judged once."""
    counts: Counter = Counter()
    examples: dict[Any, Any] = {}
    rest = None
    for chunk in chunks:
        text = chunk if not rest else rest + chunk
        end = text.rfind(b"\n" if isinstance(text, bytes) else "\n") + 1
        _count_dates(text, 0, end, counts, examples)
        rest = text[end:]  # an unfinished line: scanned with the next chunk
    if rest:
        _count_dates(rest, 0, len(rest), counts, examples)
    evidence = TimestampEvidence()
    for key, count in counts.items():
        value = examples[key]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        add_counted(evidence, value.replace("\\/", "/"), count)
    return evidence


def _count_dates(text: bytes | str, start: int, end: int, counts: Counter,
                 examples: dict) -> None:
    for match in _DATE_FIELDS[type(text)].finditer(text, start, end):
        key = match.group(2)
        counts[key] += 1
        if key not in examples:
            examples[key] = match.group(1)


# --- lines ----------------------------------------------------------------------------------

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
    record, problem = decode_json(line)
    if problem is None and not isinstance(record, dict):
        problem = f"expected a JSON object, got {type(record).__name__}"
    return record, problem


def decode_json(line: bytes | str) -> tuple[Any, str | None]:
    """A JSON text's value, or a problem (``_TOO_DEEP`` itself for deep nesting)."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({json_problem(exc, line=False)})"
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return None, f"not readable JSON ({exc})"
    except RecursionError:
        return None, _TOO_DEEP


def json_problem(exc: json.JSONDecodeError, *, line: bool = True) -> str:
    """What is wrong with a JSON text and where, in plain words: "Invalid control character
    at line 1, column 95" (``line=False``: "... at column 95", for a JSONL line). json's
    own message may end in "at" already, and its str() reads "... at: line 1 column 95"."""
    where = f"line {exc.lineno}, column {exc.colno}" if line else f"column {exc.colno}"
    return f"{exc.msg.removesuffix(' at')} at {where}"


def _line_failure(number: int, problem: str, index: int) -> Invalid:
    return Invalid(conversation_id=f"line {number}", index=index,
                   reason=f"line {number}: {problem}")


def raw_conversation(record: dict, where: str, rule: TimestampRule | None = None) -> dict | str:
    """A conversation record (``id``?, ``messages`` or ``conversations``, ``title``?,
    ``created_at``?) as a raw conversation for validation, its messages named
    ``"<where> messages[i]"`` and their times read under ``rule``; or a problem with the
    record as a whole."""
    messages = record["messages"] if "messages" in record else record.get("conversations")
    cid = record.get("id")
    if cid is None:
        try:
            cid = derived_id(messages)
        except RecursionError:
            return _TOO_DEEP
    raw: dict[str, Any] = {"id": cid, "where": where}
    if "messages" in record or "conversations" in record:
        raw["messages"] = messages
    if isinstance(messages, list):
        for position, message in enumerate(messages):
            if type(message) is dict:
                message["where"] = f"{where} messages[{position}]"
                if rule is not None:
                    read_time(message, rule)
    if record.get("title") is not None:
        raw["title"] = record["title"]
    created = _first_time(record)
    if created is not None:
        raw["created_at"] = created
    return raw


def read_time(message: dict, rule: TimestampRule) -> None:
    """Read the message's timestamp under the source's rule, in place: validation takes a
    datetime as it is (its quick path); a value that cannot be read is left for validation
    to warn about."""
    stamp = message.get("timestamp")
    if stamp is not None and type(stamp) is not datetime:
        moment = read_timestamp(stamp, rule)
        if moment is not None:
            message["timestamp"] = moment


def _first_time(record: dict) -> Any:
    for name in _TIME_KEYS:
        value = record.get(name)
        if value is not None:
            return value
    return None


class _Reader:
    """What both layouts share: resolving each record's entity and process."""

    def __init__(self, name: str, entity_id: str | None) -> None:
        self.name, self.default = name, entity_id
        self.last_key: Key | None = None
        self.run_index = 0
        self.rule: TimestampRule | None = None  # the file's, set once decided

    def key_of(self, record: dict, number: int) -> Key | str:
        """``(entity_id, process_id)`` of a record, or a problem with them."""
        entity = record.get("entity_id")
        if entity is None:
            if self.default is None:
                raise InvalidInputError(
                    f"{self.name}: line {number} has no entity_id: pass --entity-id "
                    f"(entity_id=...) to say whose conversations the file holds")
            entity = self.default
        elif (text := id_text(entity)) is None or not text.strip():
            return f"entity_id must be a non-empty string or an integer, got {entity!r}"
        else:
            entity = text
        process = record.get("process_id")
        if process is not None and (not isinstance(process, str) or not process.strip()):
            return f"process_id must be a non-empty string, got {process!r}"
        return (entity, process)

    def fallback_key(self) -> Key:
        """The key for a line whose own entity is unknown: the run it sits in."""
        if self.last_key is not None:
            return self.last_key
        return (self.default, None) if self.default is not None else ("", None)

    def emit(self, key: Key, item: dict | Invalid) -> Item:
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
            raw = raw_conversation(record, f"line {number}", self.rule)
            if isinstance(raw, str):
                yield self.emit(key, _line_failure(number, raw, 0))
                continue
            yield self.emit(key, raw)


@dataclass(slots=True)
class _Pending:
    """The conversation being gathered from consecutive message lines."""

    cid: str
    key: Key
    first_line: int
    last_line: int
    messages: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # lines that cannot be messages
    title: Any = None
    # Unreadable lines since the last good one: theirs if the conversation goes on after.
    gap: list[tuple[int, str]] = field(default_factory=list)
    earlier_run_ended: int | None = None  # set when the id was seen before (not contiguous)


class _MessageLines(_Reader):
    """Layout (b): one message per line, the lines of one conversation contiguous."""

    def __init__(self, name: str, entity_id: str | None) -> None:
        super().__init__(name, entity_id)
        # digest of (entity, conversation id) -> last line of its run; to tell a reappearing
        # id. 16-byte digests: a million conversations take ~120 MB, not ~240 as tuples.
        self.seen: dict[bytes, int] = {}

    def items(self, lines: Iterator[tuple[int, bytes | str]]) -> Iterator[Item]:
        pending: _Pending | None = None
        for number, line in lines:
            if not line.strip():
                continue
            record, problem = _decode_object(line)
            cid = None
            if problem is None:
                value = record.get("conversation_id")
                cid = id_text(value)
                if cid is None or not cid.strip():
                    problem = "missing 'conversation_id'" if value is None else (
                        f"'conversation_id' must be a non-empty string or an integer, got "
                        f"{value!r}")
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
                pending.earlier_run_ended = self.seen.get(_seen_key(key[0], cid))
            self._add(pending, record, number)
        if pending is not None:
            yield from self._finish(pending)

    def _add(self, pending: _Pending, record: dict, number: int) -> None:
        """The line's record is the message itself (validation reads its role, content,
        timestamp), named by its line."""
        pending.last_line = number
        if pending.title is None and record.get("title"):
            pending.title = record["title"]
        entity = record.get("entity_id", self.default)
        text = id_text(entity)  # (None, unlike any key, for what is no id)
        if (text != pending.key[0] and number != pending.first_line
                and _stripped(text) != _stripped(pending.key[0])):
            pending.problems.append(f"line {number}: entity_id {entity!r} differs from "
                                    f"{pending.key[0]!r} on line {pending.first_line}")
            return
        if "timestamp" not in record:
            stamp = _first_time(record)
            if stamp is not None:
                record["timestamp"] = stamp
        record["where"] = f"line {number}"
        if self.rule is not None:
            read_time(record, self.rule)
        pending.messages.append(record)

    def _finish(self, pending: _Pending) -> Iterator[Item]:
        cid = pending.cid
        label = conversation_label({"id": cid}, 0)
        where = (f"lines {pending.first_line}-{pending.last_line}"
                 if pending.last_line != pending.first_line else f"line {pending.first_line}")
        if pending.earlier_run_ended is not None:
            item: dict | Invalid = Invalid(conversation_id=label, index=0, reason=(
                f"conversation {label!r}: its messages are not contiguous (lines "
                f"{pending.earlier_run_ended} and {pending.first_line}); the lines of one "
                f"conversation must be consecutive, so {where} were not seeded"))
        elif pending.problems:
            more = len(pending.problems) - _MAX_PROBLEMS_LISTED
            listed = "; ".join(pending.problems[:_MAX_PROBLEMS_LISTED])
            item = Invalid(conversation_id=label, index=0, reason=(
                f"conversation {label!r}: {listed}" + (f"; and {more} more" if more > 0 else "")))
        else:
            item = {"id": cid, "messages": pending.messages, "where": where}
            if pending.title is not None:
                item["title"] = pending.title
        if pending.earlier_run_ended is None:
            self.seen[_seen_key(pending.key[0], cid)] = pending.last_line
        yield self.emit(pending.key, item)
        for number, problem in pending.gap:
            yield self.emit(pending.key, _line_failure(number, problem, 0))


def _seen_key(entity: str, cid: str) -> bytes:
    # The entity's length first: ids may hold any character, a separator too.
    return hashlib.blake2b(f"{len(entity)}:{entity}{cid}".encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
