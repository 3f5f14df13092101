"""ChatGPT data exports: ``conversations.json``, split ``conversations-*.json`` files, or the
export's ``.zip``.

Each conversation in an export is a tree (``mapping``: node id -> ``{message, parent,
children}``): editing a message or regenerating an answer starts a new branch. The branch the
user last saw ends at ``current_node``; only that branch is read, from the root down. Of its
messages, the user's and the assistant's visible text is kept; hidden system context, tool
calls and tool output, code the assistant ran, browsing displays and non-text parts (images)
are left out, each with a warning naming the node (``"tool message left out (node 3f2a)"``).
Roles, empty messages and times are then judged by :mod:`memori_nb.validation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import SeedData
from ..validation import DEFAULT_OPTIONS, Invalid, ReadOptions
from ._exports import label_record, nothing_left, read_export, read_options, record_invalid

_EXPECTED = "a JSON list of conversations with 'mapping' and 'current_node'"
_TEXT_TYPES = frozenset({"text", "multimodal_text"})


def read_chatgpt_export(path: str | Path, *, entity_id: str, dayfirst: bool | None = None,
                        timestamp_format: str | None = None,
                        role_map: dict[str, str | None] | None = None) -> SeedData:
    """Read a ChatGPT data export as one entity's conversations, streamed.

    Args:
        path: ``conversations.json``; a folder of split ``conversations-*.json`` files (read
            in name order); or the export's ``.zip`` (its ``conversations*.json`` members are
            read from the zip, nothing is extracted to disk).
        entity_id: whose conversations these are (an export carries no usable user id).
        dayfirst, timestamp_format, role_map: passed on to validation (an export's times
            are epoch numbers, so they rarely matter); see :class:`ReadOptions`.

    Returns:
        A :class:`SeedData` whose ``conversations`` is an iterator of raw conversations
        (see :mod:`memori_nb.validation`), validated when seeded: one file is parsed at a
        time, each record converted only when the seeding engine reaches it. A record that
        cannot be used at all is an :class:`Invalid` (it fails on its own; the rest goes on).

    Raises:
        InvalidInputError: no entity_id; the file is missing, not JSON, or not a ChatGPT
            export (checked up front for the first file, when reached for later split files).

    Example:
        >>> import json, tempfile, pathlib
        >>> from memori_nb.validation import parse_conversation
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "conversations.json").write_text(json.dumps([{
        ...     "id": "c1", "title": "Hi", "current_node": "b", "mapping": {
        ...         "a": {"id": "a", "message": None, "parent": None, "children": ["b"]},
        ...         "b": {"id": "b", "parent": "a", "children": [], "message": {
        ...             "author": {"role": "user"}, "create_time": 1700000000.0,
        ...             "content": {"content_type": "text", "parts": ["Hello!"]}}}}}]))
        >>> seed = read_chatgpt_export(folder / "conversations.json", entity_id="me")
        >>> raw = next(iter(seed.conversations))
        >>> [m.content for m in parse_conversation(raw, 0, seed.options).messages]
        ['Hello!']
    """
    options = read_options(f"{path}", dayfirst=dayfirst, timestamp_format=timestamp_format,
                           role_map=role_map)
    return read_export(path, entity_id=entity_id, kind="chatgpt", expected=_EXPECTED,
                       parse=parse_chatgpt_conversation, options=options)


def parse_chatgpt_conversation(record: Any, index: int, *, where: str = "",
                               options: ReadOptions = DEFAULT_OPTIONS) -> dict | Invalid:
    """One conversation of a ChatGPT export (a parsed JSON object) as a raw conversation.

    Follows the branch ending at ``current_node``; see the module docstring for what is
    kept. Hand the result to :func:`memori_nb.validation.parse_conversation`.

    Args:
        record: one item of the export's list.
        index: its position, used to name it when it has no id.
        where: where the record is (``"conversations.json: record 7"``).
        options: unused (times are epoch numbers); taken so all readers look alike.

    Returns:
        ``{"id", "title", "messages": [{"role", "content", "timestamp", "where": "node
        ..."}], "where", "warnings"}``, or :class:`Invalid` when the record as a whole
        cannot be used (no id, no mapping, a broken branch, nothing left).
    """
    label = label_record(record, index, ("id", "conversation_id"))
    if not isinstance(record, dict):
        return record_invalid(label, index, where, f"expected a conversation object, "
                                                   f"got {type(record).__name__}")
    if label.startswith("#"):
        return record_invalid(label, index, where, "missing 'id' (or 'conversation_id')")
    mapping = record.get("mapping")
    if not isinstance(mapping, dict):
        return record_invalid(label, index, where, "missing 'mapping'" if mapping is None
                              else f"'mapping' must be an object, got {type(mapping).__name__}")
    branch = _current_branch(mapping, record.get("current_node"))
    if isinstance(branch, str):
        return record_invalid(label, index, where, branch)

    messages: list[dict] = []
    warnings: list[str] = []
    for node_id, node in branch:
        message = node.get("message")
        if message is None:
            continue  # the tree's root and other structural nodes carry no message
        kept = _message(message, f"node {node_id}", warnings)
        if kept is not None:
            messages.append(kept)
    if not messages:
        return nothing_left(label, index, where, warnings)
    title = record.get("title")
    return {"id": label, "title": title or None, "messages": messages, "where": where,
            "warnings": warnings}


def _current_branch(mapping: dict, current: Any) -> list[tuple[str, dict]] | str:
    """The ``(node id, node)`` pairs from the root to ``current``, or a problem."""
    if current is None:
        return "missing 'current_node'"
    if not isinstance(current, str) or current not in mapping:
        return f"current_node {current!r} is not in 'mapping'"
    branch = []
    seen = set()
    node_id, child = current, None
    while node_id is not None:
        if node_id in seen:
            return f"the parents of node {current!r} form a cycle (at node {node_id!r})"
        if not isinstance(node_id, str) or node_id not in mapping:
            return f"node {child!r} has parent {node_id!r}, which is not in 'mapping'"
        node = mapping[node_id]
        if not isinstance(node, dict):
            return f"node {node_id!r} is not an object"
        seen.add(node_id)
        branch.append((node_id, node))
        node_id, child = node.get("parent"), node_id
    branch.reverse()
    return branch


def _message(message: Any, where: str, warnings: list[str]) -> dict | None:
    """The raw message to keep, or None with a warning saying why it is left out."""
    if not isinstance(message, dict):
        warnings.append(f"malformed message left out ({where})")
        return None
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    metadata = message.get("metadata")
    hidden = isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation")
    if hidden or role == "system":
        # System context and custom instructions: never shown in the chat.
        warnings.append(f"hidden system message left out ({where})")
        return None
    if role == "tool":
        warnings.append(f"tool message left out ({where})")
        return None
    content = message.get("content")
    content_type = content.get("content_type") if isinstance(content, dict) else None
    if content_type not in _TEXT_TYPES:
        kind = content_type if isinstance(content_type, str) else "contentless"
        warnings.append(f"{kind} message left out ({where})")  # code, browsing displays ...
        return None
    if message.get("recipient", "all") not in (None, "all"):
        # Text addressed to a plugin or tool (a search query ...), not to the user.
        warnings.append(f"tool call left out ({where})")
        return None
    return {"role": role, "content": _text_of(content.get("parts"), where, warnings),
            "timestamp": message.get("create_time"), "where": where}


def _text_of(parts: Any, where: str, warnings: list[str]) -> str:
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("content_type") == "audio_transcription" \
                and isinstance(part.get("text"), str):
            texts.append(part["text"])  # what was said in a voice conversation
        else:
            kind = part.get("content_type") if isinstance(part, dict) else None
            kind = kind if isinstance(kind, str) else type(part).__name__
            warnings.append(f"{kind} part left out ({where})")
    return "\n".join(texts)
