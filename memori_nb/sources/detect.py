"""Tell what kind of conversation file a path holds, and read any of them as SeedData.

Formats (``FORMATS``):

=========  ==============================================================================
seed       the seed JSON file ``{"entity_id", "process_id"?, "conversations": [...]}``
jsonl      JSON Lines: a conversation or a message per line (see :mod:`.jsonl`), OpenAI
           fine-tuning files and Hugging Face rows with a ``messages`` column
parquet    one row per message, or a ``messages`` column (see :mod:`.tabular`)
csv        long format, one row per message, with a header row
chatgpt    a ChatGPT data export: ``conversations.json``, split files or the ``.zip``
claude     a Claude.ai data export: ``conversations.json`` or the ``.zip``
sharegpt   ``[{"id", "conversations": [{"from", "value"}]}]`` (see :mod:`.formats`)
langchain  LangChain ``messages_to_dict`` messages (see :mod:`.formats`)
=========  ==============================================================================

A file is never taken for a seed file just because nothing else fits: a broken or foreign
file gets the error of the format it looks like, or "cannot tell its format".
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
                       is_sharegpt_record, zip_conversation_members)
from .chatgpt import read_chatgpt_export
from .claude import read_claude_export
from .formats import read_langchain, read_sharegpt
from .jsonl import json_problem, read_jsonl
from .seed_file import load_seed_file
from .tabular import read_table, table_format

FORMATS = ("seed", "jsonl", "parquet", "csv", "chatgpt", "claude", "sharegpt", "langchain")
# How much of a JSON file is read to tell its kind; a smaller file is parsed whole.
PEEK_BYTES = 1 << 20
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
_READERS = {"chatgpt": read_chatgpt_export, "claude": read_claude_export,
            "sharegpt": read_sharegpt, "langchain": read_langchain}
# Keys that tell a JSON file's kind when it cannot be parsed (too big, or broken): the
# earliest found wins. A key is a quoted name followed by ':' (inside a string it would be
# written \"name\").
_KEY = rb'(?<!\\)"%s"\s*:'
_MARKERS = (
    ("chatgpt", re.compile(_KEY % rb"mapping")),
    ("claude", re.compile(_KEY % rb"chat_messages")),
    ("seed", re.compile(_KEY % rb"entity_id")),
    ("sharegpt", re.compile(_KEY % rb"conversations" + rb'\s*\[\s*\{\s*"(?:from|value)"\s*:')),
    ("langchain", re.compile(_KEY % rb"type" + rb'\s*"\w+"\s*,\s*"data"\s*:\s*\{')),
)
# One pass that stops at the first marker, rather than one pass over the whole head per kind.
_ANY_MARKER = re.compile(b"|".join(b"(?P<%s>%s)" % (kind.encode(), marker.pattern)
                                   for kind, marker in _MARKERS))
# Alone, 'conversations' is taken for a seed file missing its entity_id (its loader says so).
_WEAK_SEED = re.compile(_KEY % rb"conversations")
_HINT = f"pass format=... (--format), one of {', '.join(FORMATS)}"


def detect_format(path: str | Path) -> str:
    """The format of a conversation file, one of :data:`FORMATS`.

    By extension (``.jsonl``/``.ndjson``, ``.parquet``, ``.csv``), and for ``.json``, ``.zip``
    and folders by looking at the structure: an object (or list of objects) with
    ``entity_id`` and ``conversations`` is a seed file, a list of objects with ``mapping`` a
    ChatGPT export, with ``chat_messages`` a Claude export, with ``conversations`` of
    ``{"from", "value"}`` turns ShareGPT, and LangChain ``{"type", "data"}`` messages a
    LangChain file; JSON objects one per line are JSON Lines. A file that cannot be parsed
    (too big to read whole, or broken) is told by the first of those keys in it, so it gets
    the error of the format it looks like.

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
        return "parquet"  # Parquet without its extension (a messages column too)
    return _json_kind(_peek_file(path), str(path))


def read_source(path: str | Path, *, format: str | None = None, entity_id: str | None = None,
                dayfirst: bool | None = None, timestamp_format: str | None = None,
                role_map: dict[str, str | None] | None = None,
                **table_options: Any) -> Iterable[SeedData]:
    """Read any supported conversation file as a stream of :class:`SeedData`.

    Args:
        path: the file (or export folder / zip).
        format: one of :data:`FORMATS`; detected with :func:`detect_format` by default.
        entity_id: whose conversations they are. Needed for ChatGPT and Claude exports,
            ShareGPT and LangChain files; for JSONL, Parquet and CSV it is the entity of
            records that name none; a seed file names its own entities, so it is refused
            there.
        dayfirst: how numeric dates such as ``03/04/2024`` are written (True: day first),
            when the file's values do not show it.
        timestamp_format: a ``strptime`` format the file's timestamps follow, instead.
        role_map: more role names, e.g. ``{"agent": "assistant", "note": None}``.
        table_options: for Parquet/CSV, column names (``conversation_col=``, ``role_col=``,
            ``content_col=``, ``timestamp_col=``, ``entity_col=``) and ``batch_rows=``;
            see :func:`read_table`.

    Returns:
        SeedData (a list for a seed file, else an iterator), to hand to
        ``await m.seed(..., keep_results=False)``; large files are streamed (see each
        reader). Conversations are validated when seeded, under the file's timestamp rule.

    Raises:
        InvalidInputError: the format is unknown or cannot be told, the file does not match
            the format asked for, an entity_id is missing (or given for a seed file), or the
            reader refuses it (e.g. dates that could be day/month or month/day).

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
        message = (f"{', '.join(sorted(table_options))}: options for Parquet and CSV files, "
                   f"but {path} is read as {fmt}")
        if fmt == "jsonl":  # dtype=False: pandas would read the id "007" as the number 7
            given = ", ".join(f"{name}={value!r}" for name, value in sorted(table_options.items()))
            message += (f", whose keys must have the default names (entity_id, conversation_id, "
                        f"role, content, timestamp); rename them in the file, or load it with "
                        f"table = pandas.read_json({str(path)!r}, lines=True, dtype=False) and "
                        f"pass it to from_dataframe(table, {given}), or write it as CSV "
                        f"(table.to_csv('chats.csv', index=False)) and read that with these "
                        f"options")
        raise InvalidInputError(message)
    reading = dict(dayfirst=dayfirst, timestamp_format=timestamp_format, role_map=role_map)
    if fmt in ("parquet", "csv"):
        return read_table(path, format=fmt, entity_id=entity_id, **reading, **table_options)
    if fmt == "jsonl":
        return read_jsonl(path, entity_id=entity_id, **reading)
    if fmt in _READERS:
        return iter([_READERS[fmt](path, entity_id=entity_id, **reading)])
    # seed
    if format is not None and Path(path).is_file() and not zipfile.is_zipfile(path):
        found = _json_kind(_peek_file(Path(path)), str(path), strict=False)
        if found not in (None, "seed"):
            raise InvalidInputError(f"{path}: not a seed file: it looks like "
                                    f"{_describe_kind(found)} (format={found!r})")
    if entity_id is not None:
        raise InvalidInputError(f"{path}: a seed file names its own entities (entity_id in "
                                f"the file); entity_id=... (--entity-id) is for exports, "
                                f"ShareGPT, LangChain, JSONL, Parquet and CSV")
    return load_seed_file(path, **reading)  # a list: its size is known, so progress shows a total


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
    """The kind of a JSON (or JSON Lines) file from its start (the whole file when small);
    None if unknown and not strict."""
    head, whole = peeked
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    kind, problem = None, "it is empty"
    if text:
        if whole:
            kind, problem = _parsed_kind(text)
        else:
            problem = f"none of its keys tells a format in its first {PEEK_BYTES:,} bytes"
        if kind is None and _first_line_is_object(text):
            kind = "jsonl"
        if kind is None and text[:1] in (b"[", b"{"):
            kind = _marker_kind(text)  # too big to parse, broken, or foreign
    if kind is not None or not strict:
        return kind
    raise InvalidInputError(f"{name}: cannot tell its format ({problem}); {_HINT}")


def _parsed_kind(text: bytes) -> tuple[str | None, str]:
    """The kind of a whole JSON document, or None and what it looks like."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"it is not JSON ({json_problem(exc)})"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"it is not JSON ({exc})"
    except RecursionError:
        return None, "it is JSON nested too deeply to read"
    kind = document_kind(document)
    if kind in EXPORT_NAMES:
        return kind, ""
    if isinstance(document, dict) and b"\n" not in text.strip() and (
            "messages" in document or "conversation_id" in document
            or is_sharegpt_record(document)):
        return "jsonl", ""  # one line of JSON Lines
    return None, describe_document(document)


def _marker_kind(text: bytes) -> str | None:
    if (first := _ANY_MARKER.search(text)) is not None:  # the earliest marker says
        return first.lastgroup
    return "seed" if _WEAK_SEED.search(text) else None


def _first_line_is_object(text: bytes) -> bool:
    first, newline, rest = text.partition(b"\n")
    if not newline or not rest.strip():
        return False
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
