"""Tell what kind of conversation file a path holds, and read any of them as SeedData.

Formats (``FORMATS``):

========  ===============================================================================
seed      the seed JSON file ``{"entity_id", "process_id"?, "conversations": [...]}``
jsonl     JSON Lines: a conversation or a message per line (see :mod:`.jsonl`)
parquet   long format, one row per message (see :mod:`.tabular`)
csv       long format, one row per message, with a header row
chatgpt   a ChatGPT data export: ``conversations.json``, split files or the ``.zip``
claude    a Claude.ai data export: ``conversations.json`` or the ``.zip``
========  ===============================================================================
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..models import SeedData
from ._exports import (EXPORT_NAMES, _CONVERSATION_FILE, describe_document, document_kind,
                       zip_conversation_members)
from .chatgpt import read_chatgpt_export
from .claude import read_claude_export
from .jsonl import read_jsonl
from .seed_file import load_seed_file
from .tabular import read_table, table_format

FORMATS = ("seed", "jsonl", "parquet", "csv", "chatgpt", "claude")
# How much of a JSON file is read to tell its kind; a smaller file is parsed whole.
PEEK_BYTES = 1 << 20
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
# The first of these keys in a JSON file tells its kind (outside strings: not after a \).
_MARKERS = re.compile(rb'(?<!\\)"(mapping|chat_messages|entity_id|conversations)"\s*:')
_MARKER_KIND = {b"mapping": "chatgpt", b"chat_messages": "claude", b"entity_id": "seed",
                b"conversations": "seed"}
_HINT = f"pass format=... (--format), one of {', '.join(FORMATS)}"


def detect_format(path: str | Path) -> str:
    """The format of a conversation file, one of :data:`FORMATS`.

    By extension (``.jsonl``/``.ndjson``, ``.parquet``, ``.csv``), and for ``.json``, ``.zip``
    and folders by looking at the structure: an object (or list of objects) with
    ``entity_id`` and ``conversations`` is a seed file, a list of objects with ``mapping`` a
    ChatGPT export, with ``chat_messages`` a Claude export. Only the start of a big JSON
    file is read.

    Raises:
        InvalidInputError: no such file, or its format cannot be told (the message lists
            the formats and suggests ``--format``).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "conversations.json"
        >>> _ = path.write_text('[{"uuid": "c1", "name": "", "chat_messages": []}]')
        >>> detect_format(path)
        'claude'
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file()
                       and _CONVERSATION_FILE.match(p.name))
        if not found:
            raise InvalidInputError(f"{path}: a folder with no conversations*.json file; "
                                    f"a folder can hold a ChatGPT or Claude export; {_HINT}")
        return _export_kind(_peek_file(found[0]), str(found[0]))
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    fmt = table_format(path)
    if fmt is not None:
        return fmt
    if zipfile.is_zipfile(path):
        members = zip_conversation_members(path)
        if not members:
            raise InvalidInputError(f"{path}: a zip with no conversations*.json member, so "
                                    f"not a ChatGPT or Claude export; {_HINT}")
        with zipfile.ZipFile(path) as archive, archive.open(members[0]) as handle:
            head, whole = _peek(handle, archive.getinfo(members[0]).file_size)
        return _export_kind((head, whole), f"{path}!{members[0]}")
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start == b"PAR1":
        return "parquet"
    # A .json file of no known kind is read as a seed file: its loader then says exactly
    # what is wrong (not JSON at line N, missing 'conversations' ...).
    kind = _json_kind(_peek_file(path), str(path), strict=not name.endswith(".json"))
    return kind or "seed"


def read_source(path: str | Path, *, format: str | None = None, entity_id: str | None = None,
                **table_options: Any) -> Iterable[SeedData]:
    """Read any supported conversation file as a stream of :class:`SeedData`.

    Args:
        path: the file (or export folder / zip).
        format: one of :data:`FORMATS`; detected with :func:`detect_format` by default.
        entity_id: whose conversations they are. Needed for ChatGPT and Claude exports;
            for JSONL, Parquet and CSV it is the entity of records that name none; a seed
            file names its own entities, so it is refused there.
        table_options: for Parquet/CSV, column names (``conversation_col=``, ``role_col=``,
            ``content_col=``, ``timestamp_col=``, ``entity_col=``) and ``batch_rows=``;
            see :func:`read_table`.

    Returns:
        SeedData (a list for a seed file, else an iterator), to hand to ``await m.seed(..., keep_results=False)``; large
        files are streamed (see each reader).

    Raises:
        InvalidInputError: the format is unknown or cannot be told, the file does not match
            the format asked for, an export has no ``entity_id``, or the reader refuses it.

    Example:
        >>> import asyncio, json, tempfile, pathlib
        >>> from memori_nb import Memori
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "chats.jsonl"
        >>> _ = path.write_text(json.dumps({"id": "c1", "messages": [
        ...     {"role": "user", "content": "I have a cat named Miso."}]}) + "\\n")
        >>> m = Memori(conn=":memory:", backend="local")
        >>> asyncio.run(m.seed(read_source(path, entity_id="user-1"))).successful
        1
    """
    if format is not None and format not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    fmt = format or detect_format(path)
    if table_options and fmt not in ("parquet", "csv"):
        raise InvalidInputError(f"{', '.join(sorted(table_options))}: options for Parquet and "
                                f"CSV files, but {path} is read as {fmt}")
    if fmt in ("parquet", "csv"):
        return read_table(path, format=fmt, entity_id=entity_id, **table_options)
    if fmt == "jsonl":
        return read_jsonl(path, entity_id=entity_id)
    if fmt == "chatgpt":
        return iter([read_chatgpt_export(path, entity_id=entity_id)])
    if fmt == "claude":
        return iter([read_claude_export(path, entity_id=entity_id)])
    # seed
    if format is not None and Path(path).is_file() and not zipfile.is_zipfile(path):
        found = _json_kind(_peek_file(Path(path)), str(path), strict=False)
        if found not in (None, "seed"):
            raise InvalidInputError(f"{path}: not a seed file: it looks like "
                                    f"{_describe_kind(found)} (format={found!r})")
    if entity_id is not None:
        raise InvalidInputError(f"{path}: a seed file names its own entities (entity_id in "
                                f"the file); entity_id=... (--entity-id) is for exports, "
                                f"JSONL, Parquet and CSV")
    return load_seed_file(path)  # a list: its size is known, so progress shows a total


def _describe_kind(kind: str) -> str:
    return {"jsonl": "JSON Lines"}.get(kind, f"a {EXPORT_NAMES.get(kind, kind)}")


def _peek_file(path: Path) -> tuple[bytes, bool]:
    try:
        with open(path, "rb") as handle:
            return _peek(handle, path.stat().st_size)
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the file ({exc})") from exc


def _peek(handle: Any, size: int) -> tuple[bytes, bool]:
    """The first PEEK_BYTES of a file, and whether that is the whole file."""
    head = handle.read(PEEK_BYTES)
    return head, size <= PEEK_BYTES


def _export_kind(peeked: tuple[bytes, bool], name: str) -> str:
    kind = _json_kind(peeked, name)
    if kind not in ("chatgpt", "claude"):
        raise InvalidInputError(f"{name}: a conversations file that is neither a ChatGPT nor "
                                f"a Claude export; {_HINT}")
    return kind


def _json_kind(peeked: tuple[bytes, bool], name: str, *, strict: bool = True) -> str | None:
    """The kind of a JSON (or JSON Lines) file from its start; None if unknown and not strict.
    """
    head, whole = peeked
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    problem = "it is empty" if not text else None
    if whole and text:
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if _first_line_is_object(text):
                return "jsonl"
            problem = f"it is not JSON ({exc})"
        else:
            kind = document_kind(document)
            if kind in ("chatgpt", "claude", "seed"):
                return kind
            problem = describe_document(document)
    elif text:
        if _first_line_is_object(text) and b"\n" in text.strip():
            return "jsonl"
        marker = _MARKERS.search(text)
        if marker and text[:1] in (b"[", b"{"):
            return _MARKER_KIND[marker.group(1)]
        problem = "none of 'mapping', 'chat_messages', 'entity_id' or 'conversations' in " \
                  f"its first {PEEK_BYTES:,} bytes"
    if not strict:
        return None
    raise InvalidInputError(f"{name}: cannot tell its format ({problem}); {_HINT}")


def _first_line_is_object(text: bytes) -> bool:
    first, newline, rest = text.partition(b"\n")
    if not newline or not rest.strip():
        return False
    try:
        return isinstance(json.loads(first), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
