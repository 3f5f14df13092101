"""Claude.ai data exports: ``conversations.json`` or the export's ``.zip``.

An export is a list of conversations (``uuid``, ``name``, ``created_at``, ``chat_messages``);
each message has ``sender`` (``human`` or ``assistant``), ``text``, ``created_at`` and
``content`` blocks. The text is built from the ``"text"`` blocks only: in real exports an
assistant's top-level ``text`` can include its thinking, so it is used only for a message
that has no content blocks at all. Thinking, tool-use and tool-result blocks, attachments
and messages left with no text are left out, and ``Conversation.warnings`` counts them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..models import Conversation, Message, SeedData
from ..timestamps import read_timestamp as parse_timestamp
from ..validation import Invalid
from ._exports import label_record, left_out_warning, read_export

_EXPECTED = "a JSON list of conversations with 'uuid' and 'chat_messages'"
_ROLES = {"human": "user", "user": "user", "assistant": "assistant"}


def read_claude_export(path: str | Path, *, entity_id: str) -> SeedData:
    """Read a Claude.ai data export as one entity's conversations, streamed.

    Args:
        path: the export's ``conversations.json``, a folder holding it, or the export's
            ``.zip`` (read from the zip, nothing is extracted to disk).
        entity_id: whose conversations these are (the export's account id is not used).

    Returns:
        A :class:`SeedData` whose ``conversations`` is an iterator of :class:`Conversation`
        (messages in ``created_at`` order, ``human`` as ``"user"``; ``warnings`` says what
        was left out) or :class:`Invalid` for a record that cannot be used.

    Raises:
        InvalidInputError: no entity_id; the file is missing, not JSON, or not a Claude
            export.

    Example:
        >>> import json, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "conversations.json"
        >>> _ = path.write_text(json.dumps([{"uuid": "c1", "name": "Hi", "chat_messages": [
        ...     {"sender": "human", "text": "Hello!", "created_at": "2024-05-01T10:00:00Z",
        ...      "content": [{"type": "text", "text": "Hello!"}]}]}]))
        >>> seed = read_claude_export(path, entity_id="me")
        >>> [(m.role, m.content) for m in next(iter(seed.conversations)).messages]
        [('user', 'Hello!')]
    """
    return read_export(path, entity_id=entity_id, kind="claude", expected=_EXPECTED,
                       parse=parse_claude_conversation)


def parse_claude_conversation(record: Any, index: int, *,
                              where: str = "") -> Conversation | Invalid:
    """Convert one conversation of a Claude export (a parsed JSON object).

    Args:
        record: one item of the export's list.
        index: its position, used to name it when it has no ``uuid``.
        where: appended to problems (e.g. which file it came from).

    Returns:
        A :class:`Conversation`, or :class:`Invalid` naming the record and the problem.
    """
    label = label_record(record, index, ("uuid", "id"))

    def invalid(problem: str) -> Invalid:
        return Invalid(conversation_id=label, index=index,
                       reason=f"conversation {label!r}{where}: {problem}")

    if not isinstance(record, dict):
        return invalid(f"expected a conversation object, got {type(record).__name__}")
    if label.startswith("#"):
        return invalid("missing 'uuid'")
    raw_messages = record.get("chat_messages")
    if not isinstance(raw_messages, list):
        return invalid("missing 'chat_messages'" if raw_messages is None else
                       f"'chat_messages' must be a list, got {type(raw_messages).__name__}")
    if not raw_messages:
        return invalid("chat_messages is empty")

    kept: list[Message] = []
    left_out: Counter = Counter()
    blocks_left_out: Counter = Counter()
    attached = [0]  # attachments and files: their content is not part of the text
    for raw in raw_messages:
        message = _keep(raw, blocks_left_out, attached)
        if isinstance(message, str):
            left_out[message] += 1
        else:
            kept.append(message)
    if not kept:
        dropped = sum(left_out.values())
        detail = ", ".join(f"{n} {w}" for w, n in left_out.most_common())
        return invalid(f"no user or assistant text left after leaving out {dropped} "
                       f"thinking/tool/empty messages ({detail})")
    warnings = []
    if all(m.timestamp is not None for m in kept):
        kept.sort(key=lambda m: m.timestamp)  # stable: equal times keep the file's order
    else:
        missing = sum(m.timestamp is None for m in kept)
        warnings.append(f"kept the file's message order: {missing} of {len(kept)} messages "
                        f"have no usable created_at")
    if left_out:
        warnings.append(left_out_warning(left_out))
    if blocks_left_out:
        warnings.append(left_out_warning(blocks_left_out, "content block"))
    if attached[0]:
        warnings.append(f"left out {attached[0]} attached file"
                        f"{'' if attached[0] == 1 else 's'}")
    title = record.get("name")
    return Conversation(id=label, messages=tuple(kept),
                        title=title if isinstance(title, str) and title else None,
                        warnings=tuple(warnings))


def _keep(raw: Any, blocks_left_out: Counter, attached: list[int]) -> Message | str:
    """The message to keep, or why it is left out (the category counted in warnings)."""
    if not isinstance(raw, dict):
        return "malformed"
    sender = raw.get("sender")
    role = _ROLES.get(sender) if isinstance(sender, str) else None
    if role is None:
        return f"{sender} sender" if isinstance(sender, str) else "no sender"
    for key in ("attachments", "files"):
        extra = raw.get(key)
        if isinstance(extra, list) and extra:
            attached[0] += len(extra)
    blocks = raw.get("content")
    if isinstance(blocks, list) and blocks:
        texts = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text" and isinstance(block.get("text"), str):
                if block["text"]:
                    texts.append(block["text"])
            else:
                blocks_left_out[kind if isinstance(kind, str) else "malformed"] += 1
        text = "\n".join(texts)
    else:
        text = raw.get("text") if isinstance(raw.get("text"), str) else ""
    if not text.strip():
        return "empty"
    return Message(role=role, content=text, timestamp=parse_timestamp(raw.get("created_at")))
