"""Shared plumbing for the chat-export readers (ChatGPT, Claude): finding the JSON files of an
export (a file, a folder of split files, or the export's zip), loading them one at a time,
telling what kind of document a file holds, and wording what was left out.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .._gc import paused_gc
from ..errors import InvalidInputError
from ..models import SeedData

# The conversation files of an export: conversations.json, or conversations-000.json ... when
# an export is split.
_CONVERSATION_FILE = re.compile(r"^conversations(?:[-_.][^/]*)?\.json$", re.IGNORECASE)

EXPORT_NAMES = {"chatgpt": "ChatGPT export", "claude": "Claude export", "seed": "seed file"}


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One JSON file of an export; ``load()`` parses it (wrapping errors)."""

    name: str
    load: Callable[[], Any]


def require_entity_id(entity_id: Any, what: str) -> str:
    """The entity id for an export, which carries no user id of its own."""
    if entity_id is None:
        raise InvalidInputError(f"{what} carry no user id: pass --entity-id "
                                f"(entity_id=...) to say whose conversations they are")
    if not isinstance(entity_id, str) or not entity_id.strip():
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    return entity_id


def read_export(path: str | Path, *, entity_id: Any, kind: str, expected: str,
                parse: Callable[..., Any]) -> SeedData:
    """One SeedData whose conversations stream from an export's files, one file loaded at a
    time; ``parse(record, index, where=...)`` turns each record into a Conversation or
    Invalid."""
    entity_id = require_entity_id(entity_id, f"{EXPORT_NAMES[kind]}s")
    files = export_files(path, kind=kind)
    first = files[0].load()
    check_document(first, kind=kind, name=files[0].name, expected=expected)
    return SeedData(entity_id=entity_id,
                    conversations=_stream(files, first, kind, expected, parse))


def _stream(files: list[ExportFile], first: Any, kind: str, expected: str,
            parse: Callable[..., Any]) -> Iterator[Any]:
    index = 0
    document = first
    for number, file in enumerate(files):
        if number:
            document = file.load()
            check_document(document, kind=kind, name=file.name, expected=expected)
        where = f" (in {file.name})" if len(files) > 1 else ""
        for position in range(len(document)):
            record, document[position] = document[position], None  # free it once converted
            yield parse(record, index, where=where)
            index += 1
        document = None


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
        try:
            with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
                data = handle.read()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise InvalidInputError(f"{path}!{member}: cannot read the zip member "
                                    f"({exc})") from exc
        return _parse(data, f"{path}!{member}")
    return load


def _parse(data: bytes, name: str) -> Any:
    try:
        with paused_gc():  # parsed JSON is acyclic; see _gc.paused_gc
            return json.loads(data)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name}: not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{name}: not valid JSON (line {exc.lineno}, column "
                                f"{exc.colno}: {exc.msg})") from exc


def document_kind(document: Any) -> str | None:
    """``"chatgpt"``, ``"claude"`` or ``"seed"`` for a parsed JSON document, else None.

    An empty list is a valid (empty) export of either kind and gives ``"empty"``.
    """
    if isinstance(document, dict):
        return "seed" if "conversations" in document else None
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
    """Raise one clear InvalidInputError unless ``document`` is an export of ``kind``."""
    found = document_kind(document)
    if found == kind or found == "empty":
        return
    raise InvalidInputError(f"{name}: not a {EXPORT_NAMES[kind]}: "
                            f"{describe_document(document)}; expected {expected}")


def left_out_warning(counts: Counter, noun: str = "message") -> str:
    """``"left out 5 messages: 2 hidden system, 2 tool, 1 code"`` (largest counts first)."""
    total = sum(counts.values())
    plural = noun if total == 1 else f"{noun}s"
    parts = ", ".join(f"{n} {what}" for what, n in counts.most_common())
    return f"left out {total} {plural}: {parts}"


def label_record(record: Any, index: int, keys: tuple[str, ...]) -> str:
    """The id of an export record (the first usable of ``keys``), else ``#<index>``."""
    if isinstance(record, dict):
        for key in keys:
            value = record.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return f"#{index}"
