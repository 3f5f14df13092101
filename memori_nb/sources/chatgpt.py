"""ChatGPT data exports: ``conversations.json``, split ``conversations-*.json`` files, or the
export's ``.zip``.

Each conversation in an export is a tree (``mapping``: node id -> ``{message, parent,
children}``): editing a message or regenerating an answer starts a new branch. The branch the
user last saw ends at ``current_node``; only that branch is read, from the root down. Of its
messages, the user's and the assistant's visible text is kept; hidden system context, tool
calls and tool output, code the assistant ran, browsing displays and empty messages are left
out, and ``Conversation.warnings`` counts what was left out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..models import Conversation, Message, SeedData
from ..timestamps import read_timestamp as parse_timestamp
from ..validation import Invalid
from ._exports import label_record, left_out_warning, read_export

_EXPECTED = "a JSON list of conversations with 'mapping' and 'current_node'"
_TEXT_TYPES = frozenset({"text", "multimodal_text"})


def read_chatgpt_export(path: str | Path, *, entity_id: str) -> SeedData:
    """Read a ChatGPT data export as one entity's conversations, streamed.

    Args:
        path: ``conversations.json``; a folder of split ``conversations-*.json`` files (read
            in name order); or the export's ``.zip`` (its ``conversations*.json`` members are
            read from the zip, nothing is extracted to disk).
        entity_id: whose conversations these are (an export carries no usable user id).

    Returns:
        A :class:`SeedData` whose ``conversations`` is an iterator: one file is parsed at a
        time, and each conversation is converted only when the seeding engine reaches it.
        Items are :class:`Conversation` (``warnings`` says what was left out) or, for a record
        that cannot be used, :class:`Invalid` (it fails on its own; the rest goes on).

    Raises:
        InvalidInputError: no entity_id; the file is missing, not JSON, or not a ChatGPT
            export (checked up front for the first file, when reached for later split files).

    Example:
        >>> import json, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "conversations.json").write_text(json.dumps([{
        ...     "id": "c1", "title": "Hi", "current_node": "b", "mapping": {
        ...         "a": {"id": "a", "message": None, "parent": None, "children": ["b"]},
        ...         "b": {"id": "b", "parent": "a", "children": [], "message": {
        ...             "author": {"role": "user"}, "create_time": 1700000000.0,
        ...             "content": {"content_type": "text", "parts": ["Hello!"]}}}}}]))
        >>> seed = read_chatgpt_export(folder / "conversations.json", entity_id="me")
        >>> [m.content for m in next(iter(seed.conversations)).messages]
        ['Hello!']
    """
    return read_export(path, entity_id=entity_id, kind="chatgpt", expected=_EXPECTED,
                       parse=parse_chatgpt_conversation)


def parse_chatgpt_conversation(record: Any, index: int, *,
                               where: str = "") -> Conversation | Invalid:
    """Convert one conversation of a ChatGPT export (a parsed JSON object).

    Follows the branch ending at ``current_node``; see the module docstring for what is kept.

    Args:
        record: one item of the export's list.
        index: its position, used to name it when it has no id.
        where: appended to problems (e.g. which split file it came from).

    Returns:
        A :class:`Conversation`, or :class:`Invalid` naming the record and the problem.
    """
    label = label_record(record, index, ("id", "conversation_id"))

    def invalid(problem: str) -> Invalid:
        return Invalid(conversation_id=label, index=index,
                       reason=f"conversation {label!r}{where}: {problem}")

    if not isinstance(record, dict):
        return invalid(f"expected a conversation object, got {type(record).__name__}")
    if label.startswith("#"):
        return invalid("missing 'id' (or 'conversation_id')")
    mapping = record.get("mapping")
    if not isinstance(mapping, dict):
        return invalid("missing 'mapping'" if mapping is None else
                       f"'mapping' must be an object, got {type(mapping).__name__}")
    branch = _current_branch(mapping, record.get("current_node"))
    if isinstance(branch, str):
        return invalid(branch)

    messages: list[Message] = []
    left_out: Counter = Counter()
    parts_left_out: Counter = Counter()
    for node in branch:
        message = node.get("message")
        if message is None:
            continue  # the tree's root and other structural nodes carry no message
        kept = _keep(message, parts_left_out)
        if isinstance(kept, str):
            left_out[kept] += 1
        else:
            messages.append(kept)
    if not messages:
        dropped = sum(left_out.values())
        detail = f" ({', '.join(f'{n} {w}' for w, n in left_out.most_common())})" if dropped else ""
        return invalid(f"no user or assistant text left after leaving out {dropped} "
                       f"hidden/tool/empty messages{detail}")
    warnings = []
    if left_out:
        warnings.append(left_out_warning(left_out))
    if parts_left_out:
        warnings.append(left_out_warning(parts_left_out, "non-text part"))
    title = record.get("title")
    return Conversation(id=label, messages=tuple(messages),
                        title=title if isinstance(title, str) and title else None,
                        warnings=tuple(warnings))


def _current_branch(mapping: dict, current: Any) -> list[dict] | str:
    """The nodes from the root to ``current``, or a problem."""
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
        branch.append(node)
        node_id, child = node.get("parent"), node_id
    branch.reverse()
    return branch


def _keep(message: Any, parts_left_out: Counter) -> Message | str:
    """The message to keep, or why it is left out (the category counted in warnings)."""
    if not isinstance(message, dict):
        return "malformed"
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation"):
        return "hidden system"
    if role == "system":
        return "hidden system"
    if role == "tool":
        return "tool"
    if role not in ("user", "assistant"):
        return f"{role} role" if isinstance(role, str) else "no author"
    content = message.get("content")
    content_type = content.get("content_type") if isinstance(content, dict) else None
    if content_type not in _TEXT_TYPES:
        return content_type if isinstance(content_type, str) else "no content"
    recipient = message.get("recipient", "all")
    if recipient not in (None, "all"):
        return "tool call"  # text addressed to a plugin or tool, not to the user
    text = _text_of(content.get("parts"), parts_left_out)
    if not text.strip():
        return "empty"
    return Message(role=role, content=text, timestamp=parse_timestamp(message.get("create_time")))


def _text_of(parts: Any, parts_left_out: Counter) -> str:
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
            parts_left_out[kind if isinstance(kind, str) else type(part).__name__] += 1
    return "\n".join(texts)
