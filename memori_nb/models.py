"""Frozen dataclasses for everything that flows through a seeding run. No I/O here."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from .errors import ConfigurationError, InvalidInputError

ROLES = ("user", "assistant", "system")
# What no store can hold: a NUL, or half of a surrogate pair.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """Whether every store can hold ``text`` (nothing :data:`UNSTORABLE` in it).

    A surrogate is found by encoding to UTF-8, which refuses it: three times quicker than
    the regex's scan, and most messages of real chat history are not pure ASCII."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stored_id(value: Any) -> Any:
    """An entity or process id as memori_nb stores it: what no store can hold replaced by
    U+FFFD, surrounding whitespace trimmed (what :meth:`SeedData.for_conversations` does),
    so that a look-up by the id as given finds what was seeded under it. Anything not a
    string is returned as it is."""
    return UNSTORABLE.sub("\ufffd", value).strip() if isinstance(value, str) else value


DEFAULT_MAX_MESSAGES_PER_REQUEST = 4000
DEFAULT_MAX_CHARS_PER_REQUEST = 800_000
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_CHUNK_LARGE_CONVERSATIONS = True
DEFAULT_BATCH_SIZE = 10
DEFAULT_REQUEST_TIMEOUT = 60.0

Status = Literal["succeeded", "failed", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One chat message. ``timestamp`` is when it was said at the source, if known
    (a timezone-aware UTC datetime once validated)."""

    role: str
    content: str
    timestamp: Any = None


_new_object = object.__new__
_set_role, _set_content, _set_timestamp = (
    Message.role.__set__, Message.content.__set__, Message.timestamp.__set__)  # type: ignore[attr-defined]


def new_message(role: str, content: str, timestamp: Any = None) -> Message:
    """``Message(role=role, content=content, timestamp=timestamp)`` at a third of the cost:
    the frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which
    adds up over millions of messages. For values already validated."""
    message = _new_object(Message)
    _set_role(message, role)
    _set_content(message, content)
    _set_timestamp(message, timestamp)
    return message


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """A validated conversation: a non-empty tuple of messages with known roles."""

    id: str
    messages: tuple[Message, ...]
    title: str | None = None
    # What the source left out or repaired (e.g. "left out 3 tool messages").
    warnings: tuple[str, ...] = ()

    def content_hash(self) -> str:
        """SHA-256 of the roles and contents, in order: the ledger's "same content" test.

        Each message is framed by its role and length, so no content can imitate a boundary.
        """
        parts = []
        for message in self.messages:  # no formatted copy of each content
            parts += (f"{message.role}\x00{len(message.content)}\x00", message.content)
        return hashlib.sha256("".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class SeedType(Enum):
    """What a :class:`SeedData` holds (as in the Memori seeding interface)."""

    CONVERSATION = "conversation"


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedData:
    """The conversations of one entity (user) to seed.

    Build it with :meth:`SeedData.for_conversations`. ``conversations`` holds the raw input
    (dicts as in the seed JSON format, or :class:`Conversation` objects); it is validated when
    seeding, so one bad conversation fails on its own while the others go on.
    """

    entity_id: str
    conversations: Sequence[Any] | Iterable[Any]
    process_id: str | None = None
    # How the raw conversations are read (a validation.ReadOptions); None: decided from them.
    options: Any = None
    # What was repaired in the ids themselves, e.g. "entity id whitespace trimmed (' Jo ')".
    warnings: tuple[str, ...] = ()

    @classmethod
    def for_conversations(cls, *, entity_id: str, conversations: Iterable[Any],
                          process_id: str | None = None, dayfirst: bool | None = None,
                          timestamp_format: str | None = None,
                          role_map: dict[str, str | None] | None = None,
                          options: Any = None) -> SeedData:
        """Wrap one entity's conversations for :meth:`Memori.seed`.

        Args:
            entity_id: who the conversations belong to (their facts are stored under it);
                surrounding whitespace is dropped.
            conversations: ``[{"id": str, "messages": [{"role", "content"}, ...]}, ...]``;
                a list, or any iterable to stream (then the total is unknown up front).
            process_id: optional id of the agent/process the conversations were held with.
            dayfirst: how numeric dates such as ``03/04/2024`` are written: True for
                day/month, False for month/day. Needed only when the values do not show it.
            timestamp_format: a ``strptime`` format the timestamps follow, instead.
            role_map: more role names, e.g. ``{"agent": "assistant", "note": None}`` (None
                leaves such messages out).
            options: a :class:`memori_nb.validation.ReadOptions` (what readers pass).

        Raises:
            InvalidInputError: entity_id is not a non-empty string, or conversations is not
                a list/iterable of conversations.

        Example:
            >>> SeedData.for_conversations(entity_id="user-1", conversations=[
            ...     {"id": "c1", "messages": [{"role": "user", "content": "Hi"}]}]).entity_id
            'user-1'
        """
        if not isinstance(entity_id, str) or not entity_id.strip():
            raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
        if process_id is not None and (not isinstance(process_id, str) or not process_id.strip()):
            raise InvalidInputError(f"process_id must be a non-empty string or None, "
                                    f"got {process_id!r}")
        if isinstance(conversations, (str, bytes, dict)) or not isinstance(conversations, Iterable):
            raise InvalidInputError(
                f"conversations for entity {entity_id!r} must be a list of conversation "
                f"objects, got {type(conversations).__name__}")
        if isinstance(conversations, list):
            conversations = tuple(conversations)
        warnings = []
        for kind, value in (("entity", entity_id), ("process", process_id)):
            if value is not None and value != value.strip():
                warnings.append(f"{kind} id whitespace trimmed ({value!r})")
            if value is not None and UNSTORABLE.search(value):
                warnings.append(f"unstorable characters replaced ({kind} id)")
        if options is None and (dayfirst is not None or timestamp_format is not None
                                or role_map):
            from .timestamps import TimestampRule
            from .validation import ReadOptions
            options = ReadOptions(timestamps=TimestampRule(dayfirst=dayfirst,
                                                           format=timestamp_format),
                                  role_map=role_map)
        return cls(entity_id=stored_id(entity_id), conversations=conversations,
                   process_id=stored_id(process_id) or None, options=options,
                   warnings=tuple(warnings))

    @property
    def seed_type(self) -> SeedType:
        """Always :attr:`SeedType.CONVERSATION` (the only kind of seed data)."""
        return SeedType.CONVERSATION

    @property
    def data(self) -> Sequence[Any] | Iterable[Any]:
        """The conversations, as given (the Memori seeding interface's name for them)."""
        return self.conversations

    @property
    def size(self) -> int | None:
        """How many conversations, or None when they are streamed from an iterator."""
        return len(self.conversations) if isinstance(self.conversations, Sequence) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedConfig:
    """How conversations are split, sent and retried.

    Args:
        max_messages_per_request: most messages in one augmentation request (4000).
        max_chars_per_request: most characters of content in one request (800,000).
        max_retries: retries after the first attempt for transient failures (3); a 429 is
            waited out, for up to ``retry.RATE_LIMIT_BUDGET_SECONDS`` (600 s).
        retry_delay: first backoff in seconds; doubles on each retry, plus jitter (1.0).
        chunk_large_conversations: split oversized conversations into several requests (True);
            when False an oversized conversation fails with its size.
        batch_size: most requests in flight at once, a sliding window (10).
        request_timeout: seconds before one request counts as timed out (60).
    """

    max_messages_per_request: int = DEFAULT_MAX_MESSAGES_PER_REQUEST
    max_chars_per_request: int = DEFAULT_MAX_CHARS_PER_REQUEST
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    chunk_large_conversations: bool = DEFAULT_CHUNK_LARGE_CONVERSATIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_messages_per_request", "max_chars_per_request", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"SeedConfig.{name} must be a positive integer, "
                                         f"got {value!r}")
        retries = self.max_retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"SeedConfig.max_retries must be an integer >= 0, "
                                     f"got {retries!r}")
        # NaN and inf pass a plain comparison, but a sleep or a timeout of them never ends.
        # retry_delay 0 retries at once (tests use it); request_timeout 0 fails every request.
        if not _finite(self.retry_delay) or self.retry_delay < 0:
            raise ConfigurationError(f"SeedConfig.retry_delay must be a finite number of "
                                     f"seconds >= 0, got {self.retry_delay!r}")
        if not _finite(self.request_timeout) or self.request_timeout <= 0:
            raise ConfigurationError(f"SeedConfig.request_timeout must be a finite number of "
                                     f"seconds > 0, got {self.request_timeout!r}")


def _finite(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimSettings:
    """How a run claims its conversations in a store shared with other workers, so no two
    workers send one conversation (see ``engine.seed_all(..., claims=...)``).

    A claim is a lease: the worker renews it every ``lease_seconds / 3`` while its run goes
    and releases it at the end; a killed worker's claims run out after ``lease_seconds`` and
    another worker may then take its conversations over.

    Args:
        worker: a name unique to this worker's run, e.g.
            ``f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"``.
        lease_seconds: how long a claim holds without renewal (60). Longer: a killed
            worker's conversations wait longer; shorter: a worker whose event loop stalls
            that long may lose its claims.
        backfill_started: when the backfill these workers share began (an aware datetime).
            A forced run then sends again what was seeded before it, not what a worker of
            this backfill seeded since (a killed worker's shard redone, a claim another
            worker held and finished): each conversation once per backfill.

    Raises:
        ConfigurationError: ``worker`` is empty or ``lease_seconds`` is not a positive number.

    Example:
        >>> ClaimSettings(worker="host-a:4711:1f2e3d4c", lease_seconds=30).lease_seconds
        30
    """

    worker: str
    lease_seconds: float = 60.0
    backfill_started: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.worker, str) or not self.worker.strip():
            raise ConfigurationError(f"ClaimSettings.worker must be a non-empty string, got "
                                     f"{self.worker!r}")
        seconds = self.lease_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ConfigurationError(f"ClaimSettings.lease_seconds must be a number > 0, got "
                                     f"{seconds!r}")
        started = self.backfill_started
        if started is not None and not (isinstance(started, datetime) and started.tzinfo):
            raise ConfigurationError(f"ClaimSettings.backfill_started must be an aware "
                                     f"datetime, got {started!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Triple:
    """A knowledge-graph fact: subject --predicate--> object, each end with a type."""

    subject_name: str
    subject_type: str
    predicate: str
    object_name: str
    object_type: str

    @property
    def fact(self) -> str:
        """The fact sentence for this triple: ``"{subject} {predicate} {object}"``."""
        return f"{self.subject_name} {self.predicate} {self.object_name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens a request (or a conversation's requests, or a run's) used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class Extraction:
    """What augmentation returned for one request. ``usage``: the tokens it used, when the
    backend bills by token (None for the AA service and the local extractor). ``warnings``:
    what the backend left out of the answer (a malformed triple), kept with the result.
    ``sources``: (fact, positions of the request's messages that stated it) pairs, from a
    backend that knows them (the local extractor); the stores find the others themselves
    (:mod:`memori_nb.provenance`)."""

    triples: tuple[Triple, ...] = ()
    facts: tuple[str, ...] = ()
    summary: str | None = None
    attributes: tuple[str, ...] = ()
    usage: Usage | None = None
    warnings: tuple[str, ...] = ()
    sources: tuple[tuple[str, tuple[int, ...]], ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationResult:
    """The outcome of one conversation.

    ``status`` is ``"succeeded"``, ``"failed"`` (``error`` says why in full, naming the
    conversation; ``reason`` in a few words, without its name) or ``"skipped"`` (not sent:
    ``reason`` says why, e.g. ``"already seeded"``; ``error`` is None). ``success`` is True
    only for ``"succeeded"``.
    """

    conversation_id: str
    entity_id: str
    status: Status
    triples_count: int = 0
    summary: str | None = None
    error: str | None = None
    duration_ms: float = 0.0
    chunks_processed: int = 0
    warnings: tuple[str, ...] = ()
    # Tokens this run's requests for the conversation used, when the backend reports them
    # (None for the AA service and the local extractor), and their cost in US dollars when
    # the backend has prices. Chunks an earlier run sent are not counted again.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    # Why it failed or was skipped, short enough for a table column (None when it succeeded).
    reason: str | None = None

    @property
    def success(self) -> bool:
        return self.status == "succeeded"


# The reason of a result skipped because the ledger holds it with the same content (the
# summaries group skipped results by reason: "24 skipped (already seeded)").
ALREADY_SEEDED = "already seeded"
#: ``stopped_reason`` of a run stopped on request (a Stop, a kernel interrupt) before its end.
INTERRUPTED = "interrupted"
# The reason of a result skipped because another run holds its claim (a worker's, or a plain
# run on the same database; seeding it now, or dead with its lease not yet run out): the
# caller sends it again after the lease.
CLAIMED_ELSEWHERE = "being seeded by another run"

# Where in a conversation a problem is, when the message starts with it: "row 551",
# "messages[3]", "line 12". Several problems are joined by "; ", each with its location.
_WHERE = r"(?:rows? |lines? |messages\[)[^:;]{1,40}"
_LOCATED = re.compile(rf"({_WHERE}): (.+)", re.DOTALL)
_NEXT_PROBLEM = re.compile(rf"; {_WHERE}: ")


def short_reason(error: str, conversation_id: str) -> str:
    """``error`` without the conversation's name in front, for a table column.

    Errors name their conversation (``"conversation 'c7': row 551: role is missing"``) so
    that they read alone; beside the ``conversation_id`` column that prefix only pushes the
    reason out of sight. A lone problem's location goes after it.

    Example:
        >>> short_reason("conversation 'c7': row 551: role is missing", "c7")
        'role is missing (row 551)'
    """
    named = f"conversation {conversation_id!r}"
    for prefix in (f"{named}: ", f"{named} is ", f"{named} ", f"{conversation_id}: "):
        if error.startswith(prefix):
            error = error[len(prefix):]
            break
    located = _LOCATED.fullmatch(error)
    if located is None or _NEXT_PROBLEM.search(error):
        return error
    return f"{located[2]} ({located[1]})"


RESULT_COLUMNS = ("entity_id", "conversation_id", "status", "success", "reason",
                  "triples_count", "chunks_processed", "duration_ms", "error", "summary",
                  "warnings", "prompt_tokens", "completion_tokens", "cost")


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedResult:
    """The outcome of a seeding run.

    ``results`` keeps input order. ``total == successful + failed + skipped``.
    """

    run_id: str
    total: int
    successful: int
    failed: int
    skipped: int
    total_triples: int
    duration_ms: float
    # Left out of the repr: a notebook echoing a million results would hang the kernel.
    results: tuple[ConversationResult, ...] = field(default=(), repr=False)
    stopped_reason: str | None = None
    chunked_conversations: int = 0
    # The run's tokens and cost (US dollars): None when no request reported tokens, or (cost)
    # when the backend has no prices.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    # Conversations skipped because another worker held their claim (CLAIMED_ELSEWHERE);
    # among ``skipped``. Run again after the lease to send them.
    claimed_elsewhere: int = 0

    @property
    def conversations(self) -> tuple[ConversationResult, ...]:
        """The per-conversation results, in input order (empty with ``keep_results=False``)."""
        return self.results

    @property
    def success_rate(self) -> float:
        """Percentage of the conversations sent in this run that succeeded, as in the Memori
        seeding interface (100.0 when none was sent)."""
        attempted = self.successful + self.failed
        return 100.0 * self.successful / attempted if attempted else 100.0

    def to_frame(self):
        """One row per conversation as a pandas DataFrame (columns: ``RESULT_COLUMNS``)."""
        import pandas as pd

        rows = [(r.entity_id, r.conversation_id, r.status, r.success, r.reason,
                 r.triples_count, r.chunks_processed, r.duration_ms, r.error, r.summary,
                 list(r.warnings), r.prompt_tokens, r.completion_tokens, r.cost)
                for r in self.results]
        return pd.DataFrame.from_records(rows, columns=list(RESULT_COLUMNS))

    def __str__(self) -> str:
        """The run in one line, e.g. ``"Seeded 37 conversations in 3.1 s: 36 succeeded, 1
        failed; 120 triples"`` or ``"Nothing to seed: all 37 conversations already seeded"``."""
        from .wording import describe_seed_result

        return describe_seed_result(self)

    def _repr_html_(self) -> str:
        """Jupyter's display: a small table of the totals (tokens and cost when known, why
        the run stopped)."""
        from .wording import seed_result_html

        return seed_result_html(self)

    def summary_dict(self) -> dict[str, Any]:
        """The run's totals as a JSON-ready dict (what ``--json`` prints); ``prompt_tokens``,
        ``completion_tokens`` and ``cost`` only when the run has them, ``claimed_elsewhere``
        only when another worker held some."""
        out = {"run_id": self.run_id, "total": self.total, "successful": self.successful,
               "failed": self.failed, "skipped": self.skipped,
               "total_triples": self.total_triples, "duration_ms": round(self.duration_ms, 1)}
        for name in ("prompt_tokens", "completion_tokens", "cost"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.claimed_elsewhere:
            out["claimed_elsewhere"] = self.claimed_elsewhere
        if self.stopped_reason:
            out["stopped_reason"] = self.stopped_reason
        return out


@dataclass(slots=True)
class SeedCounters:
    """Live counts during a run, handed to progress sinks."""

    total: int | None = None
    processed: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    triples: int = 0
    chunked: int = 0
    # Requests allowed in flight, once the service has refused some for capacity (else None).
    window: int | None = None
    # Tokens and cost (US dollars) of the run so far: None until a result reports them.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    # Why the run stopped on an error (quota exhausted, service unreachable, store cannot be
    # written), set before the sinks close; None when it ran to the end or was interrupted.
    stopped_reason: str | None = None

    def count(self, result: ConversationResult) -> None:
        self.processed += 1
        self.triples += result.triples_count
        self.chunked += result.chunks_processed > 1
        if result.prompt_tokens is not None or result.completion_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + (result.prompt_tokens or 0)
            self.completion_tokens = ((self.completion_tokens or 0)
                                      + (result.completion_tokens or 0))
        if result.cost is not None:
            self.cost = (self.cost or 0.0) + result.cost
        if result.status == "succeeded":
            self.successful += 1
        elif result.status == "failed":
            self.failed += 1
        else:
            self.skipped += 1

    @property
    def outcome(self) -> Literal["success", "warning", "danger"]:
        """How a finished run's bar is coloured: ``"success"`` when nothing failed and it
        ran to the end, ``"danger"`` when every conversation sent failed or the run stopped
        on an error, ``"warning"`` (amber) otherwise (some failed, or it was interrupted)."""
        stopped_by_error = self.stopped_reason not in (None, INTERRUPTED)
        if stopped_by_error or (self.failed and not self.successful):
            return "danger"
        finished = self.total is None or self.processed >= self.total
        return "warning" if self.failed or not finished else "success"
