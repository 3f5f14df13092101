"""ShareGPT and LangChain message files: JSON files of conversations with no user id.

``sharegpt`` — a JSON list of records, as in ShareGPT dumps and many fine-tuning sets::

    [{"id": "abc", "system": "optional system prompt",
      "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]

  ``from`` is read by validation's role rules (``human`` is user; ``gpt`` assistant); the
  ShareGPT names ``chatgpt``, ``bing`` and ``bard`` are the assistant too, and the
  function-calling turns ``function_call`` and ``observation`` are left out with a warning.
  A record without ``id`` gets one derived from its content (:func:`derived_id`).

``langchain`` — messages as LangChain's ``messages_to_dict`` writes them,
``{"type": "human"|"ai"|"system"|"tool"|"chat", "data": {"content": ...}}``, in one of:

- a JSON list of such messages: one conversation, named after the file (what
  ``FileChatMessageHistory`` writes; ``session-42.json`` is conversation ``session-42``);
- a JSON object of session id -> list of messages: one conversation per session;
- a JSON list of ``{"id"|"session_id", "messages": [...]}``, or of message lists (ids then
  derived from the content).

  An AI message that only calls tools, and non-text content parts, are left out with a
  warning; ``tool`` and ``function`` messages by validation.

Both need ``entity_id`` (whose conversations they are). A file is parsed whole and its
records are converted one at a time as seeding reaches them. Neither format has message
times; a ``timestamp`` a ShareGPT turn carries is read under ``dayfirst=`` /
``timestamp_format=`` (a date that could be day/month or month/day without them is left
empty, with a warning, never guessed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..models import SeedData
from ..validation import DEFAULT_OPTIONS, Invalid, ReadOptions, derived_id, id_text
from ._exports import (is_langchain_message, list_records, read_export, read_options,
                       record_invalid)

_SHAREGPT_EXPECTED = ("a JSON list of records with 'conversations' of "
                      "{'from', 'value'} turns")
_LANGCHAIN_EXPECTED = ("LangChain messages {'type', 'data': {'content'}}: a list of them, "
                       "an object of session id -> list, or a list of {'id', 'messages'}")
_CHUNK = "MessageChunk"  # streamed messages: "AIMessageChunk" is an "ai" message


def read_sharegpt(path: str | Path, *, entity_id: str, dayfirst: bool | None = None,
                  timestamp_format: str | None = None,
                  role_map: dict[str, str | None] | None = None) -> SeedData:
    """Read a ShareGPT file (see the module docstring) as one entity's conversations.

    Args:
        path: the ``.json`` file.
        entity_id: whose conversations these are (the file names no user).
        dayfirst, timestamp_format: how numeric dates in ``timestamp`` fields are written.
        role_map: more speaker names, e.g. ``{"narrator": None}``.

    Returns:
        A :class:`SeedData` streaming raw conversations, validated when seeded.

    Raises:
        InvalidInputError: no entity_id; the file is missing, not JSON, or not ShareGPT.

    Example:
        >>> import json, tempfile, pathlib
        >>> from memori_nb.validation import parse_conversation
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "sharegpt.json"
        >>> _ = path.write_text(json.dumps([{"id": "s1", "conversations": [
        ...     {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]))
        >>> seed = read_sharegpt(path, entity_id="me")
        >>> conv = parse_conversation(next(iter(seed.conversations)), 0, seed.options)
        >>> [(m.role, m.content) for m in conv.messages]
        [('user', 'Hi'), ('assistant', 'Hello!')]
    """
    options = read_options(f"{path}", dayfirst=dayfirst, timestamp_format=timestamp_format,
                           role_map=role_map)
    return read_export(path, entity_id=entity_id, kind="sharegpt",
                       expected=_SHAREGPT_EXPECTED, parse=parse_sharegpt_record,
                       options=options)


def parse_sharegpt_record(record: Any, index: int, *, where: str = "",
                          options: ReadOptions = DEFAULT_OPTIONS) -> dict | Invalid:
    """One ShareGPT record as a raw conversation (``{"id", "messages", "where"}``; each
    turn keeps its ``from``/``value`` and gets ``"where": "conversations[3]"``)."""
    if not isinstance(record, dict):
        return record_invalid(f"#{index}", index, where, f"expected an object with "
                                                        f"'conversations', got "
                                                        f"{type(record).__name__}")
    turns = record.get("conversations")
    cid = record.get("id")
    if (text := id_text(cid)) is not None:
        cid = text  # some datasets number their records
    if cid is None and isinstance(turns, list):
        cid = derived_id(turns)
    if not isinstance(turns, list):
        label = cid if isinstance(cid, str) and cid.strip() else f"#{index}"
        return record_invalid(label, index, where, "missing 'conversations'" if turns is None
                              else f"'conversations' must be a list, got "
                                   f"{type(turns).__name__}")
    messages = [{**turn, "where": f"conversations[{i}]"} if isinstance(turn, dict) else turn
                for i, turn in enumerate(turns)]
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": system, "where": "system"})
    return {"id": cid, "messages": messages, "where": where}


def read_langchain(path: str | Path, *, entity_id: str, dayfirst: bool | None = None,
                   timestamp_format: str | None = None,
                   role_map: dict[str, str | None] | None = None) -> SeedData:
    """Read a LangChain message file (see the module docstring for its three shapes) as
    one entity's conversations.

    Args:
        path: the ``.json`` file.
        entity_id: whose conversations these are (the file names no user).
        dayfirst, timestamp_format, role_map: passed on to validation.

    Returns:
        A :class:`SeedData` streaming raw conversations, validated when seeded.

    Raises:
        InvalidInputError: no entity_id; the file is missing, not JSON, or not of a
            LangChain shape.

    Example:
        >>> import json, tempfile, pathlib
        >>> from memori_nb.validation import parse_conversation
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "session-42.json"
        >>> _ = path.write_text(json.dumps([
        ...     {"type": "human", "data": {"content": "Hi"}},
        ...     {"type": "ai", "data": {"content": "Hello!"}}]))
        >>> seed = read_langchain(path, entity_id="me")
        >>> conv = parse_conversation(next(iter(seed.conversations)), 0, seed.options)
        >>> conv.id, [m.role for m in conv.messages]
        ('session-42', ['user', 'assistant'])
    """
    options = read_options(f"{path}", dayfirst=dayfirst, timestamp_format=timestamp_format,
                           role_map=role_map)
    return read_export(path, entity_id=entity_id, kind="langchain",
                       expected=_LANGCHAIN_EXPECTED, parse=parse_langchain_record,
                       options=options, records=_langchain_records)


def _langchain_records(document: Any, file: str) -> Iterator[tuple[Any, str]]:
    """``((id or None, messages), where)`` for each conversation of a LangChain file."""
    if isinstance(document, dict):
        for key in list(document):
            yield (str(key), document.pop(key)), f"{file}: session {key!r}"
    elif document and is_langchain_message(document[0]):
        yield (PurePosixPath(file).stem, document), file  # one conversation: the file's
    else:
        for record, where in list_records(document, file):
            if isinstance(record, dict):
                cid = record.get("id", record.get("session_id"))
                yield (cid, record.get("messages")), where
            else:
                yield (None, record), where


def parse_langchain_record(record: tuple[Any, Any], index: int, *, where: str = "",
                           options: ReadOptions = DEFAULT_OPTIONS) -> dict | Invalid:
    """``(id or None, LangChain messages)`` as a raw conversation; the id is derived from
    the messages when there is none."""
    cid, items = record
    if not isinstance(items, list):
        label = cid if isinstance(cid, str) and cid.strip() else f"#{index}"
        return record_invalid(label, index, where, f"expected a list of LangChain "
                                                   f"messages, got {type(items).__name__}")
    if cid is None:
        cid = derived_id(items)
    warnings: list[str] = []
    messages = []
    for position, item in enumerate(items):
        message = _langchain_message(item, f"messages[{position}]", warnings)
        if message is not None:
            messages.append(message)
    return {"id": cid, "messages": messages, "where": where, "warnings": warnings}


def _langchain_message(item: Any, where: str, warnings: list[str]) -> Any:
    """A LangChain message as ``{"role", "content", "where"}`` (other shapes are passed
    on for validation to judge), or None when it is left out."""
    if not is_langchain_message(item):
        return item
    data = item["data"]
    kind = item["type"]
    if kind.endswith(_CHUNK):
        kind = kind[:-len(_CHUNK)].lower()
    role = data.get("role") if kind == "chat" else kind  # ChatMessage carries its role
    content = data.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" \
                    and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                part_type = part.get("type") if isinstance(part, dict) else None
                part_type = part_type if isinstance(part_type, str) else type(part).__name__
                warnings.append(f"{part_type} part left out ({where})")
        content = "\n".join(texts)
    if kind == "ai" and data.get("tool_calls") and not (isinstance(content, str)
                                                         and content.strip()):
        warnings.append(f"tool call left out ({where})")
        return None
    return {"role": role, "content": content, "where": where}
