"""Claude.ai data exports: ``conversations.json`` or the export's ``.zip``.

An export is a list of conversations (``uuid``, ``name``, ``created_at``, ``chat_messages``);
each message has ``sender`` (``human`` or ``assistant``), ``text``, ``created_at``,
``content`` blocks, ``attachments`` and ``files``. The text is built from the ``"text"``
blocks only: in real exports an assistant's top-level ``text`` can include its thinking, so
it is used only for a message that has no content blocks at all. Thinking, tool-use and
tool-result blocks are left out with a warning each (``"thinking block left out
(chat_messages[3])"``). An attachment's extracted text is kept, appended to its message as
``[attachment paper.pdf]`` and the text (``"attachment text kept (paper.pdf)"``); a file
without extracted text (an image, a PDF Claude did not extract) gives ``"attachment left
out (photo.png)"``. Messages are put in ``created_at`` order. Roles, empty messages and times
are then judged by :mod:`memori_nb.validation` (``human`` is ``user``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import SeedData
from ..timestamps import read_timestamp
from ..validation import DEFAULT_OPTIONS, Invalid, ReadOptions
from ._exports import label_record, nothing_left, read_export, read_options, record_invalid

_EXPECTED = "a JSON list of conversations with 'uuid' and 'chat_messages'"


def read_claude_export(path: str | Path, *, entity_id: str, dayfirst: bool | None = None,
                       timestamp_format: str | None = None,
                       role_map: dict[str, str | None] | None = None) -> SeedData:
    """Read a Claude.ai data export as one entity's conversations, streamed.

    Args:
        path: the export's ``conversations.json``, a folder holding it, or the export's
            ``.zip`` (read from the zip, nothing is extracted to disk).
        entity_id: whose conversations these are (the export's account id is not used).
        dayfirst, timestamp_format, role_map: passed on to validation (an export's times
            are ISO 8601, so they rarely matter); see :class:`ReadOptions`.

    Returns:
        A :class:`SeedData` whose ``conversations`` is an iterator of raw conversations
        (messages in ``created_at`` order; see the module docstring), validated when seeded,
        or :class:`Invalid` for a record that cannot be used at all.

    Raises:
        InvalidInputError: no entity_id; the file is missing, not JSON, or not a Claude
            export.

    Example:
        >>> import json, tempfile, pathlib
        >>> from memori_nb.validation import parse_conversation
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "conversations.json"
        >>> _ = path.write_text(json.dumps([{"uuid": "c1", "name": "Hi", "chat_messages": [
        ...     {"sender": "human", "text": "Hello!", "created_at": "2024-05-01T10:00:00Z",
        ...      "content": [{"type": "text", "text": "Hello!"}]}]}]))
        >>> seed = read_claude_export(path, entity_id="me")
        >>> raw = next(iter(seed.conversations))
        >>> [(m.role, m.content) for m in parse_conversation(raw, 0, seed.options).messages]
        [('user', 'Hello!')]
    """
    options = read_options(f"{path}", dayfirst=dayfirst, timestamp_format=timestamp_format,
                           role_map=role_map)
    return read_export(path, entity_id=entity_id, kind="claude", expected=_EXPECTED,
                       parse=parse_claude_conversation, options=options)


def parse_claude_conversation(record: Any, index: int, *, where: str = "",
                              options: ReadOptions = DEFAULT_OPTIONS) -> dict | Invalid:
    """One conversation of a Claude export (a parsed JSON object) as a raw conversation.

    Hand the result to :func:`memori_nb.validation.parse_conversation`.

    Args:
        record: one item of the export's list.
        index: its position, used to name it when it has no ``uuid``.
        where: where the record is (``"conversations.json: record 7"``).
        options: the timestamp rule, used to put messages in time order.

    Returns:
        ``{"id", "title", "messages": [{"role", "content", "timestamp", "where":
        "chat_messages[3]"}], "where", "warnings"}``, or :class:`Invalid` when the record as
        a whole cannot be used.
    """
    label = label_record(record, index, ("uuid", "id"))
    if not isinstance(record, dict):
        return record_invalid(label, index, where, f"expected a conversation object, "
                                                   f"got {type(record).__name__}")
    if label.startswith("#"):
        return record_invalid(label, index, where, "missing 'uuid'")
    raw_messages = record.get("chat_messages")
    if not isinstance(raw_messages, list):
        return record_invalid(label, index, where, "missing 'chat_messages'"
                              if raw_messages is None else f"'chat_messages' must be a "
                              f"list, got {type(raw_messages).__name__}")

    messages: list[dict] = []
    warnings: list[str] = []
    for position, raw in enumerate(raw_messages):
        at = f"chat_messages[{position}]"
        if not isinstance(raw, dict):
            warnings.append(f"malformed message left out ({at})")
            continue
        messages.append({"role": raw.get("sender"), "content": _text(raw, at, warnings),
                         "timestamp": raw.get("created_at"), "where": at})
    if raw_messages and not messages:
        return nothing_left(label, index, where, warnings)
    messages = _in_time_order(messages, options, warnings)
    return {"id": label, "title": record.get("name") or None, "messages": messages,
            "where": where, "warnings": warnings}


def _text(raw: dict, where: str, warnings: list[str]) -> str:
    """The message's text blocks (or its ``text`` without blocks), then its attachments."""
    blocks = raw.get("content")
    if isinstance(blocks, list) and blocks:
        texts = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text" and isinstance(block.get("text"), str):
                if block["text"]:
                    texts.append(block["text"])
            else:
                warnings.append(f"{kind if isinstance(kind, str) else 'malformed'} block "
                                f"left out ({where})")
        text = "\n".join(texts)
    else:
        text = raw.get("text") if isinstance(raw.get("text"), str) else ""
    kept: set[str] = set()
    for key in ("attachments", "files"):
        items = raw.get(key)
        for item in items if isinstance(items, list) else ():
            name = item.get("file_name") if isinstance(item, dict) else None
            name = name if isinstance(name, str) and name else "unnamed"
            extracted = item.get("extracted_content") if isinstance(item, dict) else None
            if isinstance(extracted, str) and extracted.strip():
                separator = "\n\n" if text else ""
                text += f"{separator}[attachment {name}]\n{extracted}"
                warnings.append(f"attachment text kept ({name})")
                kept.add(name)
            elif name not in kept:  # a file can be listed in both; its text was kept
                warnings.append(f"attachment left out ({name})")
    return text


def _in_time_order(messages: list[dict], options: ReadOptions,
                   warnings: list[str]) -> list[dict]:
    """Messages sorted by ``created_at`` (stable), or in the file's order when some have no
    usable time (said in a warning)."""
    times = [read_timestamp(m["timestamp"], options.timestamps) for m in messages]
    missing = sum(t is None for t in times)
    if missing:
        warnings.append(f"file order kept ({missing} of {len(messages)} messages have no "
                        f"usable created_at)")
        return messages
    return [m for _, m in sorted(zip(times, messages), key=lambda pair: pair[0])]
