"""Shared plumbing for the readers of whole-JSON chat files (ChatGPT and Claude exports,
ShareGPT and LangChain files): finding the JSON files of an export (a file, a folder of split
files, or the export's zip), loading them one at a time, telling what kind of document a
file holds, and streaming its records as raw conversations for :mod:`memori_nb.validation`.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .._interpreter import paused_gc
from ..errors import InvalidInputError
from ..models import SeedData
from ..timestamps import TimestampEvidence
from ..validation import Invalid, ReadOptions, summarize_warnings
from .jsonl import json_problem

# The conversation files of an export: conversations.json, or conversations-000.json ... when
# an export is split.
_CONVERSATION_FILE = re.compile(r"^conversations(?:[-_.][^/]*)?\.json$", re.IGNORECASE)

# A zip member is read whole into memory before it is parsed: refuse what would not fit.
# Members above MAX_MEMBER_BYTES, or above RATIO_FLOOR that expand more than MAX_RATIO-fold
# (a zip bomb: a real ChatGPT export compresses about 10-fold), are refused unread.
MAX_MEMBER_BYTES = 2 << 30
MAX_RATIO = 200
RATIO_FLOOR = 64 << 20

EXPORT_NAMES = {"chatgpt": "ChatGPT export", "claude": "Claude export", "seed": "seed file",
                "sharegpt": "ShareGPT file", "langchain": "LangChain message file"}

#: ``records(document, file)``: the records of one parsed file, each with where it is.
Records = Callable[[Any, str], Iterator[tuple[Any, str]]]


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One JSON file of an export; ``load()`` parses it (wrapping errors)."""

    name: str
    load: Callable[[], Any]

    @property
    def short(self) -> str:
        """The file's own name (a zip member's without the zip), for locations."""
        return PurePosixPath(self.name.replace("\\", "/")).name


def require_entity_id(entity_id: Any, what: str) -> str:
    """The entity id for an export, which carries no user id of its own."""
    if entity_id is None:
        raise InvalidInputError(f"{what} carry no user id: pass --entity-id "
                                f"(entity_id=...) to say whose conversations they are")
    if not isinstance(entity_id, str) or not entity_id.strip():
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    return entity_id


def read_options(source: str, *, dayfirst: bool | None = None,
                 timestamp_format: str | None = None,
                 role_map: dict[str, str | None] | None = None) -> ReadOptions:
    """Read options for a file whose times need no day/month rule of their own (epoch
    numbers, ISO text, or none): the user's rule and role names, passed on."""
    rule = TimestampEvidence().rule(source, dayfirst=dayfirst, format=timestamp_format)
    return ReadOptions(timestamps=rule, role_map=role_map)


def read_export(path: str | Path, *, entity_id: Any, kind: str, expected: str,
                parse: Callable[..., Any], options: ReadOptions,
                records: Records | None = None) -> SeedData:
    """One SeedData whose raw conversations stream from an export's files, one file loaded
    at a time; ``parse(record, index, where=..., options=...)`` turns each record into a
    raw conversation dict or an :class:`Invalid`. ``records`` splits a parsed file into
    records (default: the items of a JSON list)."""
    entity_id = require_entity_id(entity_id, f"{EXPORT_NAMES[kind]}s")
    files = export_files(path, kind=kind)
    first = files[0].load()
    check_document(first, kind=kind, name=files[0].name, expected=expected)
    stream = _stream(files, first, kind, expected, parse, options, records or list_records)
    return SeedData.for_conversations(entity_id=entity_id, conversations=stream,
                                      options=options)


def _stream(files: list[ExportFile], first: Any, kind: str, expected: str,
            parse: Callable[..., Any], options: ReadOptions,
            records: Records) -> Iterator[Any]:
    index = 0
    document = first
    for number, file in enumerate(files):
        if number:
            document = file.load()
            check_document(document, kind=kind, name=file.name, expected=expected)
        for record, where in records(document, file.short):
            yield parse(record, index, where=where, options=options)
            index += 1
        document = None


def list_records(document: list, file: str) -> Iterator[tuple[Any, str]]:
    """The items of a JSON list, each freed once handed out (``"conversations.json: record
    7"``)."""
    for position in range(len(document)):
        record, document[position] = document[position], None
        yield record, f"{file}: record {position}"


def export_files(path: str | Path, *, kind: str) -> list[ExportFile]:
    """The conversation JSON files of an export at ``path``, in name order.

    ``path`` is a ``.json`` file, a folder holding ``conversations*.json`` files, or the
    export's ``.zip`` (members are read from the zip, never extracted to disk).

    Raises:
        InvalidInputError: no such file, or no conversation file in the folder/zip.
    """
    what = EXPORT_NAMES[kind]
    path = Path(path)
    if path.is_dir():
        found = sorted((p for p in path.iterdir()
                        if p.is_file() and _CONVERSATION_FILE.match(p.name)),
                       key=lambda p: p.name)
        if not found:
            raise InvalidInputError(f"{path}: not a {what}: the folder has no "
                                    f"conversations*.json file")
        return [ExportFile(str(p), _file_loader(p)) for p in found]
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        members = zip_conversation_members(path)
        if not members:
            raise InvalidInputError(f"{path}: not a {what}: the zip has no "
                                    f"conversations*.json member")
        return [ExportFile(f"{path}!{name}", _zip_loader(path, name)) for name in members]
    return [ExportFile(str(path), _file_loader(path))]


def zip_conversation_members(path: str | Path) -> list[str]:
    """Names of the ``conversations*.json`` members of a zip, in name order."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{path}: cannot read the zip ({exc})") from exc
    return sorted((n for n in names if _CONVERSATION_FILE.match(PurePosixPath(n).name)),
                  key=lambda n: (PurePosixPath(n).name, n))


def _file_loader(path: Path) -> Callable[[], Any]:
    def load() -> Any:
        try:
            with open(path, "rb") as handle:
                return _parse(handle.read(), str(path))
        except FileNotFoundError as exc:
            raise InvalidInputError(f"{path}: no such file") from exc
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot read the file ({exc})") from exc
    return load


def _zip_loader(path: Path, member: str) -> Callable[[], Any]:
    def load() -> Any:
        name = f"{path}!{member}"
        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo(member)
                limit = member_limit(info.compress_size)
                if info.file_size > limit:
                    raise InvalidInputError(_too_big(name, info.file_size, info.compress_size))
                with archive.open(info) as handle:
                    # The declared size may lie: never read more than the limit.
                    data = handle.read(limit + 1)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise InvalidInputError(f"{name}: cannot read the zip member ({exc})") from exc
        if len(data) > limit:
            raise InvalidInputError(_too_big(name, len(data), info.compress_size, more=True))
        return _parse(data, name)
    return load


def member_limit(compressed: int) -> int:
    """The most bytes a zip member of ``compressed`` bytes may expand to."""
    return min(MAX_MEMBER_BYTES, max(RATIO_FLOOR, compressed * MAX_RATIO))


def _too_big(name: str, size: int, compressed: int, *, more: bool = False) -> str:
    at_least = "more than " if more else ""
    why = (f"over the {_bytes(MAX_MEMBER_BYTES)} a zip member may hold"
           if size > MAX_MEMBER_BYTES else
           f"over {MAX_RATIO} times its compressed {_bytes(compressed)} (a zip bomb?)")
    return (f"{name}: expands to {at_least}{_bytes(size)}, {why}: refused; if it is genuine, "
            f"extract it and pass the .json file")


def _bytes(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n:,} bytes"


def _parse(data: bytes, name: str) -> Any:
    try:
        with paused_gc():  # parsed JSON is acyclic; see _interpreter.paused_gc
            return json.loads(data)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name}: not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{name}: not valid JSON ({json_problem(exc)})") from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidInputError(f"{name}: not readable JSON ({exc})") from None
    except RecursionError:  # its traceback would be thousands of lines: none kept
        raise InvalidInputError(f"{name}: JSON nested too deeply to read") from None


def is_langchain_message(item: Any) -> bool:
    """A LangChain ``messages_to_dict`` message: ``{"type": str, "data": {...}}``."""
    return (isinstance(item, dict) and isinstance(item.get("type"), str)
            and isinstance(item.get("data"), dict))


def _holds_langchain_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and is_langchain_message(value[0])


def is_sharegpt_record(item: dict) -> bool:
    """A ShareGPT record: ``conversations`` of ``{"from", "value"}`` turns."""
    turns = item.get("conversations")
    return (isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict)
            and ("from" in turns[0] or "value" in turns[0]))


def document_kind(document: Any) -> str | None:
    """The kind of a parsed JSON document, one of :data:`EXPORT_NAMES`, else None.

    An empty list is a valid (empty) file of any list kind and gives ``"empty"``.
    """
    if isinstance(document, dict):
        if "conversations" in document and not is_sharegpt_record(document):
            return "seed"
        first = next(iter(document.values()), None)
        return "langchain" if _holds_langchain_messages(first) else None
    if not isinstance(document, list):
        return None
    if not document:
        return "empty"
    for item in document[:20]:
        if isinstance(item, dict):
            if "mapping" in item or "current_node" in item:
                return "chatgpt"
            if "chat_messages" in item:
                return "claude"
            if "entity_id" in item and "conversations" in item:
                return "seed"
            if is_sharegpt_record(item):
                return "sharegpt"
            if is_langchain_message(item) or _holds_langchain_messages(item.get("messages")):
                return "langchain"
        elif _holds_langchain_messages(item):
            return "langchain"
    return None


def describe_document(document: Any) -> str:
    """A few words on what a JSON document looks like, for "not a ... export" errors."""
    kind = document_kind(document)
    if kind in EXPORT_NAMES:
        return f"it looks like a {EXPORT_NAMES[kind]} (format={kind!r})"
    if isinstance(document, list):
        if not document:
            return "it is an empty list"
        first = next((item for item in document if isinstance(item, dict)), None)
        if first is None:
            kinds = sorted({type(item).__name__ for item in document[:20]})
            return f"it is a list of {', '.join(kinds)}"
        keys = ", ".join(list(first)[:8])
        return f"it is a list of objects with keys {keys}"
    if isinstance(document, dict):
        return f"it is an object with keys {', '.join(list(document)[:8])}"
    return f"it is a JSON {type(document).__name__}"


def check_document(document: Any, *, kind: str, name: str, expected: str) -> None:
    """Raise one clear InvalidInputError unless ``document`` is a file of ``kind``."""
    found = document_kind(document)
    if found == kind or found == "empty":
        return
    raise InvalidInputError(f"{name}: not a {EXPORT_NAMES[kind]}: "
                            f"{describe_document(document)}; expected {expected}")


def label_record(record: Any, index: int, keys: tuple[str, ...]) -> str:
    """The id of an export record (the first usable of ``keys``), else ``#<index>``."""
    if isinstance(record, dict):
        for key in keys:
            value = record.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return f"#{index}"


def record_invalid(label: str, index: int, where: str, problem: str) -> Invalid:
    """A record unusable as a whole, named as validation names conversations."""
    label = label.strip()
    where = f"{where}: " if where else ""
    return Invalid(conversation_id=label, index=index,
                   reason=f"conversation {label!r}: {where}{problem}")


def nothing_left(label: str, index: int, where: str, warnings: list[str]) -> Invalid:
    """A record whose every message the reader left out (validation would only see an
    empty list): the reason says what was left out."""
    return record_invalid(label, index, where, f"nothing left to send: "
                                               f"{summarize_warnings(warnings, details=False)}")
