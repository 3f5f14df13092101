"""Split conversations into augmentation requests, and size them up beforehand.

Pure functions: no I/O. A conversation over ``max_messages_per_request`` or
``max_chars_per_request`` is split on message boundaries into consecutive requests; a single
message longer than the character limit is itself split into parts, so no request ever exceeds
either limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from .models import Conversation, Message, SeedConfig, SeedData
from .pricing import estimate_tokens
from .validation import Invalid, check_conversations, count_warnings

# Conversations named per kind of warning in a plan.
MAX_WARNING_EXAMPLES = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationPlan:
    """How one conversation will be sent."""

    messages: int
    characters: int
    largest_message: int
    requests: int
    over_limit: bool

    @property
    def estimated_tokens(self) -> int:
        return estimate_tokens(self.characters)


def plan_conversation(conversation: Conversation, config: SeedConfig) -> ConversationPlan:
    """Count messages and characters and how many requests the conversation will take.

    ``over_limit`` is True when the conversation does not fit in one request.
    """
    lengths = [len(m.content) for m in conversation.messages]
    characters = sum(lengths)
    over = needs_chunks(conversation.messages, config, characters)
    requests = len(split_messages(conversation.messages, config)) if over else 1
    return ConversationPlan(messages=len(lengths), characters=characters,
                            largest_message=max(lengths, default=0), requests=requests,
                            over_limit=over)


_CONTENT = attrgetter("content")


def needs_chunks(messages: Sequence[Message], config: SeedConfig,
                 characters: int | None = None) -> bool:
    """Whether ``messages`` take more than one request (``characters``: their total, when
    counted already)."""
    if characters is None:
        characters = sum(map(len, map(_CONTENT, messages)))
    return (len(messages) > config.max_messages_per_request
            or characters > config.max_chars_per_request)


def oversize_reason(conversation: Conversation, plan: ConversationPlan,
                    config: SeedConfig) -> str:
    """The failure message for an oversized conversation when chunking is turned off."""
    return (f"conversation {conversation.id!r} is too large for one request: "
            f"{plan.messages} messages and {plan.characters:,} characters, over the limit of "
            f"{config.max_messages_per_request:,} messages / "
            f"{config.max_chars_per_request:,} characters per request; "
            f"set chunk_large_conversations=True to split it into {plan.requests} requests")


def split_messages(messages: tuple[Message, ...],
                   config: SeedConfig) -> list[tuple[Message, ...]]:
    """Pack messages, in order, into as few requests as the limits allow.

    Example:
        >>> cfg = SeedConfig(max_messages_per_request=2)
        >>> msgs = tuple(Message(role="user", content=str(i)) for i in range(5))
        >>> [len(chunk) for chunk in split_messages(msgs, cfg)]
        [2, 2, 1]
    """
    max_messages = config.max_messages_per_request
    max_chars = config.max_chars_per_request
    chunks: list[tuple[Message, ...]] = []
    current: list[Message] = []
    current_chars = 0
    for message in messages:
        for part in _split_long_message(message, max_chars):
            size = len(part.content)
            if current and (len(current) >= max_messages or current_chars + size > max_chars):
                chunks.append(tuple(current))
                current, current_chars = [], 0
            current.append(part)
            current_chars += size
    if current:
        chunks.append(tuple(current))
    return chunks


def _split_long_message(message: Message, max_chars: int) -> list[Message]:
    """Split one message into parts of at most ``max_chars``, preferring whitespace breaks."""
    text = message.content
    if len(text) <= max_chars:
        return [message]
    parts = []
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            # Break after the last whitespace in the second half of the window, if any,
            # so words stay whole; otherwise cut hard.
            space = text.rfind(" ", start + max_chars // 2, end)
            if space > start:
                end = space + 1
        parts.append(Message(role=message.role, content=text[start:end],
                             timestamp=message.timestamp))
        start = end
    return parts


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    """One conversation in a plan; ``error`` is set when it would fail validation."""

    entity_id: str
    conversation_id: str
    messages: int = 0
    characters: int = 0
    estimated_tokens: int = 0
    requests: int = 0
    largest_message: int = 0
    over_limit: bool = False
    error: str | None = None
    warnings: tuple[str, ...] = ()
    # The ledger's "same content" key (Conversation.content_hash), when asked for.
    content_hash: str | None = None


def plan_seeds(seeds: Iterable[SeedData], config: SeedConfig, *,
               content_hashes: bool = False) -> Iterator[PlanRow]:
    """Validate and size every conversation, without sending anything.

    An oversized conversation with ``chunk_large_conversations=False`` gets an error, as it
    would fail when seeded. With ``content_hashes``, each valid row carries the content hash
    the ledger knows it by (so a plan can ask what was seeded before).
    """
    for seed in seeds:
        for index, parsed in check_conversations(seed):
            # The entity's own warnings (its id trimmed) count once, on its first row.
            seed_warnings = seed.warnings if index == 0 else ()
            if isinstance(parsed, Invalid):
                yield PlanRow(entity_id=seed.entity_id, conversation_id=parsed.conversation_id,
                              error=parsed.reason, warnings=seed_warnings)
                continue
            plan = plan_conversation(parsed, config)
            error = (oversize_reason(parsed, plan, config)
                     if plan.over_limit and not config.chunk_large_conversations else None)
            yield PlanRow(entity_id=seed.entity_id, conversation_id=parsed.id,
                          messages=plan.messages, characters=plan.characters,
                          estimated_tokens=plan.estimated_tokens, requests=plan.requests,
                          largest_message=plan.largest_message, over_limit=plan.over_limit,
                          error=error, warnings=seed_warnings + parsed.warnings,
                          content_hash=(parsed.content_hash()
                                        if content_hashes and error is None else None))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanTotals:
    """Totals over a plan: what a run would send."""

    entities: int
    conversations: int
    valid: int
    invalid: int
    messages: int
    characters: int
    estimated_tokens: int
    requests: int
    over_limit: int
    # Warnings by kind ("empty message left out": 12, ...), and a few examples of each.
    warnings: dict[str, int] = field(default_factory=dict)
    warning_examples: dict[str, list[str]] = field(default_factory=dict)


def total_plan(rows: Iterable[PlanRow]) -> PlanTotals:
    """Add up plan rows in one pass; only valid conversations count towards messages and
    requests."""
    entities: set[str] = set()
    conversations = valid = messages = characters = tokens = requests = over = 0
    warnings: Counter = Counter()
    examples: dict[str, list[str]] = {}
    for row in rows:
        entities.add(row.entity_id)
        if row.warnings:
            for kind, n in count_warnings(row.warnings).items():
                warnings[kind] += n
                shown = examples.setdefault(kind, [])
                if len(shown) < MAX_WARNING_EXAMPLES:
                    shown.append(f"{row.entity_id} / {row.conversation_id}")
        conversations += 1
        over += row.over_limit
        if row.error is None:
            valid += 1
            messages += row.messages
            characters += row.characters
            tokens += row.estimated_tokens
            requests += row.requests
    return PlanTotals(entities=len(entities), conversations=conversations, valid=valid,
                      invalid=conversations - valid, messages=messages, characters=characters,
                      estimated_tokens=tokens, requests=requests, over_limit=over,
                      warnings=dict(warnings.most_common()), warning_examples=examples)
