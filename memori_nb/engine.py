"""The seeding engine: validate, skip what the ledger has, send with bounded concurrency,
retry, and hand each finished conversation to the store as soon as it finishes.

Concurrency is a sliding window: ``batch_size`` workers pull conversations from one queue, so
at most ``batch_size`` requests are in flight and a new one starts as soon as any finishes.
A service that refuses requests beyond its capacity (429 without Retry-After) narrows the
window to what it takes, and the window widens again slowly to find out when it takes more.
Queued conversations are sent most-requests-first, so chunked giants do not finish last, one
chunk after another, with the window empty around them.
The chunks of one conversation are sent in order by the same worker, each carrying the summary
of the chunk before it. Results keep input order; progress reports completion order.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from ._interpreter import run_settings
from .backends.base import AugmentationBackend, AugmentationRequest, open_files_problem
from .chunking import needs_chunks, oversize_reason, plan_conversation, split_messages
from .errors import (AugmentationError, ConfigurationError, EndpointError, InvalidInputError,
                     QuotaExceededError, RateLimitedError, ServiceUnreachableError, StoreError,
                     TransientError)
from .models import (ALREADY_SEEDED, CLAIMED_ELSEWHERE, INTERRUPTED, ClaimSettings,
                     Conversation, ConversationResult, Extraction, Message, SeedConfig,
                     SeedCounters, SeedData, SeedResult, Usage, short_reason)
from .pricing import pricing_of
from .provenance import with_sources
from .retry import RetryState
from .stores.base import PartialRecord, ResultRecord, Store
from .stores.journal import Journal, JournalError, replay
from .stores.writer import BatchWriter
from .validation import (Invalid, check_conversations, repeated_id_reason, safe_extraction,
                         safe_result)

# Conversations validated and checked against the ledger together (one query per window).
# Windows start small, so the first requests go out at once, and double up to the limit.
FIRST_WINDOW = 8
LEDGER_WINDOW = 2000
# The producer (validation, planning) lets the loop run after this many seconds of work:
# an answer that arrives meanwhile waits for it, and its slot in the window with it. A
# count of messages bounded it badly: one giant conversation validates for 10-30 ms.
PRODUCER_TURN_SECONDS = 0.002

OnProgress = Callable[[int, "int | None", ConversationResult], Any]


class ProgressSink(Protocol):
    """What the engine tells a progress display (see :mod:`memori_nb.progress`)."""

    def start(self, counters: SeedCounters) -> None: ...

    def update(self, counters: SeedCounters, result: ConversationResult) -> None: ...

    def close(self, counters: SeedCounters) -> None: ...


# (_Job and _Pending are made for every conversation: not frozen, their __init__ costs
# half as much.)
@dataclass(slots=True)
class _Job:
    position: int
    entity_id: str
    process_id: str | None
    conversation: Conversation
    content_hash: str
    chunks: list[tuple[Message, ...]]
    # What an earlier run got from this conversation's first chunks (a PartialRecord).
    resume: Any = None


_LAST = 1 << 62  # the queue's priority of the workers' end marks: after every job


def _stop_cause(exc: BaseException) -> str | None:
    """Why the run stopped, in two or three words for a skipped conversation's reason
    ("run stopped (quota exhausted) before it was sent"); None when no short cause fits
    (the run's stopped_reason says it in full)."""
    if isinstance(exc, QuotaExceededError):
        return "quota exhausted"
    if isinstance(exc, AugmentationError) and exc.status_code in (401, 403):
        return "API key refused"
    if isinstance(exc, RateLimitedError):
        return "rate limited"
    if isinstance(exc, ServiceUnreachableError):
        return "service unreachable"
    if isinstance(exc, EndpointError):
        return "wrong base URL"
    return None


def _requests_left(job: _Job) -> int:
    return len(job.chunks) - (job.resume.chunks_done if job.resume is not None else 0)


class _RunStopped(Exception):
    """The run stopped (quota exhausted) before this conversation was finished."""


class _GaveUp(Exception):
    """This conversation failed for good; the message is user-facing."""


class _RateGate:
    """Holds every worker back until a server's Retry-After has passed."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Any]) -> None:
        self._clock, self._sleep, self._until = clock, sleep, 0.0

    def hold(self, seconds: float) -> None:
        self._until = max(self._until, self._clock() + seconds)

    async def wait(self) -> None:
        while (remaining := self._until - self._clock()) > 0:
            await self._sleep(remaining)


class _Window:
    """How many requests may be in flight: ``size`` at first, fewer while the service refuses
    requests beyond its capacity (a 429 without Retry-After).

    Each refusal sets the limit to the requests the service is holding besides the refused
    one, which is its capacity as closely as a client can see it. Successes then widen it
    again, one request per window's worth of successes, to find out whether capacity came
    back; each new episode of refusals halves that pace, so probing a steady cap costs a few
    429s per run, not a few per window (slots are FIFO, so no request waits for ever).
    """

    MAX_PATIENCE = 6  # probe at least once every 2**6 windows of successes

    def __init__(self, size: int) -> None:
        self.size = size
        self.limit = float(size)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        # Refusals of requests sent after the last episode began start a new episode.
        self._episode = 0
        self._patience = 0
        self._refused_at = size + 1  # the most requests in flight the service refused

    @property
    def current(self) -> int:
        """The requests allowed in flight now."""
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns a token for :meth:`release`."""
        if self.in_flight < self.current and not self._waiters:
            self.in_flight += 1
            return self._episode
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _admit counted this request in before waking it
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(self._episode, "failed")  # woken and cancelled at once
            elif waiter in self._waiters:  # (_admit may have dropped it already)
                self._waiters.remove(waiter)
            raise
        return self._episode

    def release(self, token: int, outcome: str) -> None:
        """A request ended: ``ok``, ``refused`` (429 without Retry-After) or ``failed``."""
        if outcome == "refused":
            # The others in flight were taken and this one was not.
            self.limit = max(1.0, min(self.limit, self.in_flight - 1))
            if token == self._episode:
                self._episode += 1
                self._patience = min(self._patience + 1, self.MAX_PATIENCE)
                self._refused_at = self.in_flight
        elif outcome == "ok" and self.limit < self.size:
            self.limit = min(float(self.size),
                             self.limit + 1 / (self.limit * 2 ** self._patience))
            if self.limit >= self._refused_at + 1:  # more than it refused: room came back
                self._patience = 0
        self.in_flight -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.in_flight < self.current:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                self.in_flight += 1
                waiter.set_result(None)


async def seed_all(seeds: Iterable[SeedData], *, backend: AugmentationBackend,
                   store: Store, config: SeedConfig | None = None,
                   on_progress: OnProgress | None = None, progress: ProgressSink | None = None,
                   force: bool = False, sleep: Callable[[float], Any] = asyncio.sleep,
                   clock: Callable[[], float] = time.monotonic,
                   jitter: Callable[[], float] = random.random,
                   keep_results: bool = True,
                   on_end: Callable[[SeedResult], Any] | None = None,
                   claims: ClaimSettings | None = None) -> SeedResult:
    """Seed the conversations of one or more entities in one run.

    Args:
        seeds: one :class:`SeedData` per entity.
        backend: the augmentation backend.
        store: where results, the ledger and memories are written (built if needed).
        config: limits, retries and ``batch_size`` (the sliding-window size: the most
            requests in flight, fewer while the service refuses more with 429s).
        on_progress: ``on_progress(processed, total, result)`` after each conversation.
        progress: a progress display (see :mod:`memori_nb.progress`).
        force: send conversations again even if the ledger says they were seeded.
        sleep, clock, jitter: injectable for tests (retry waits, timings, backoff jitter).
        keep_results: keep every ConversationResult in the returned SeedResult. Turn it off
            for streamed inputs of millions of conversations: the counts stay exact and the
            per-conversation results are in the store (``conversation_results``).
        on_end: called with the run's SeedResult however the run ends, once everything
            finished is saved: also when it is cancelled (``stopped_reason`` is
            ``"interrupted"``) or fails, when there is no result to return.
        claims: for several workers seeding one shared store at once (see
            :mod:`memori_nb.distributed`): each window of conversations is claimed in the
            store before it is sent, so no two workers send one conversation; those another
            worker holds are skipped (reason ``CLAIMED_ELSEWHERE``, counted in
            ``SeedResult.claimed_elsewhere``: run again after the lease to send them). The
            claims are renewed while the run goes and released when it ends, however it
            ends. Also with ``force``. The store must have ``claim`` (the SQL store).
            Without it, a run on such a store claims under its run id (a lease of 60 s;
            forced, what another run seeds meanwhile counts as seeded), so two runs at
            once never send one conversation twice.

    Returns:
        The :class:`SeedResult`, results in input order; with the tokens the backend
        reported (``Extraction.usage``) per conversation and for the run, priced with the
        backend's ``pricing`` when it has one (None when no request reported tokens).

    Raises:
        StoreError: a write to the store failed (what was written before stays).
        ConfigurationError: ``claims`` with a store that cannot hold claims; a
            ``batch_size`` over what the process's open-file limit allows (nothing is sent).
        asyncio.CancelledError: the run was cancelled; everything finished is saved first.
    """
    config = config or SeedConfig()
    problem = open_files_problem(backend, config.batch_size)
    if problem:
        raise ConfigurationError(problem)
    if claims is not None and not callable(getattr(store, "claim", None)):
        raise ConfigurationError(
            f"claims= needs a store that workers share, which can hold claims (the SQL "
            f"store on PostgreSQL, or SQLite for one machine); {store!r} cannot")
    run = _SeedRun(seeds, backend=backend, store=store, config=config,
                   on_progress=on_progress, progress=progress, force=force, sleep=sleep,
                   clock=clock, jitter=jitter, keep_results=keep_results, on_end=on_end,
                   claims=claims)
    return await run.execute()


class _SeedRun:
    def __init__(self, seeds: Iterable[SeedData], *, backend, store, config, on_progress,
                 progress, force, sleep, clock, jitter, keep_results, on_end=None,
                 claims=None) -> None:
        # A list is sized up front; any other iterable is consumed lazily, one entity at a
        # time, so a streamed source never has to be held in memory.
        self.seeds = seeds if isinstance(seeds, (list, tuple)) else iter(seeds)
        self.keep_results, self.on_end = keep_results, on_end
        self.backend, self.store, self.config = backend, store, config
        self.on_progress, self.progress, self.force = on_progress, progress, force
        self.sleep, self.clock, self.jitter = sleep, clock, jitter
        self.run_id = uuid.uuid4().hex
        sizes = [s.size for s in self.seeds] if isinstance(self.seeds, (list, tuple)) else [None]
        self.counters = SeedCounters(total=None if None in sizes else sum(sizes))
        self.results: list[ConversationResult | None] = []
        self.stop_reason: str | None = None
        # The stop's short cause, said in the reasons of the conversations it left unsent.
        self.stop_cause: str | None = None
        self.gate = _RateGate(clock, sleep)
        self.window = _Window(config.batch_size)
        # Jobs by (requests still to send, most first; input order), so a giant validated
        # late still starts before the small ones queued ahead of it.
        self.queue: asyncio.PriorityQueue[tuple[int, int, _Job | None]] = (
            asyncio.PriorityQueue(maxsize=config.batch_size * 4))
        self.requires_network = getattr(backend, "requires_network", True)
        self.clean_answers = getattr(backend, "clean_answers", False)
        # Prices per million tokens, for a backend that bills by token (else None).
        self.pricing = pricing_of(backend)
        # A backend's wait for its own rate limits, before a request's timeout starts.
        self.backend_ready = getattr(backend, "ready", None)
        # The writer works on a thread, so requests (or a CPU-only backend's extraction)
        # go on while the store writes on the other core; a store bound to one thread (an
        # in-memory sqlite3 connection) must be used inline.
        self.store_threadsafe = getattr(store, "threadsafe", True)
        self.journal: Journal | None = None  # opened once the store is built
        self.max_id_length = getattr(store, "max_id_length", None)
        # Each (entity, conversation id) of this run, by digest: its first copy (_first_copy).
        self.first_copies: dict[bytes, bytes] = {}
        # Claims in a store shared with other workers. A run on a store that can hold
        # claims claims its conversations even when none were asked for: two runs on one
        # database at once then split them, as workers do, rather than send each twice.
        if claims is None and callable(getattr(store, "claim", None)):
            claims = ClaimSettings(worker=self.run_id,
                                   backfill_started=datetime.now(timezone.utc))
        self.claims: ClaimSettings | None = claims
        self.claimed_elsewhere = 0
        self.claims_valid_until = float("-inf")  # set by each claim and renewal
        self.renewing = asyncio.Lock()  # one renewal at a time for the workers that need it
        self.claimed: set[tuple[str, str, str]] = set()  # what this run holds
        self.journal_directory = None

    async def _in_store(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call a store method that may block: on a thread when the store allows it."""
        if self.store_threadsafe:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def execute(self) -> SeedResult:
        with run_settings():
            return await self._execute()

    async def _execute(self) -> SeedResult:
        started = self.clock()
        await self._in_store(self.store.build)
        # A backend that bills journals what it finishes; a dead run's journal is replayed
        # first, so the ledger below knows what that run finished.
        directory = None
        if self.requires_network and hasattr(self.store, "journal_dir"):
            directory = await self._in_store(self.store.journal_dir)
            await self._in_store(replay, directory, self.store)
        self.journal = Journal(directory, self.run_id)
        self.journal_directory = directory
        try:
            # Whether each entity has anything in the ledger: an entity never seeded needs
            # no look-ups at all. Asked up front for a list, as the stream reaches it otherwise.
            self.ledger_empty = await self._in_store(self.store.ledger_is_empty)
            self.entities_in_ledger: dict[str, bool] = {}
            if not self.ledger_empty and isinstance(self.seeds, (list, tuple)):
                entities = {seed.entity_id for seed in self.seeds}
                found = await self._in_store(self.store.seeded_entities, entities)
                self.entities_in_ledger = {entity: entity in found for entity in entities}
            self.store.start_run(self.run_id, backend=getattr(self.backend, "name", "custom"),
                                 config=self.config, force=self.force)
        except BaseException:
            self.journal.close(delete=True)  # nothing was sent
            raise
        self.writer = BatchWriter(self.store, self.run_id, journal=self.journal,
                                  in_thread=self.store_threadsafe)
        if self.progress:
            self.progress.start(self.counters)
        tasks = [asyncio.create_task(self._produce())]
        tasks += [asyncio.create_task(self._work()) for _ in range(self.config.batch_size)]
        writer = asyncio.create_task(self.writer.run())
        renewer = [asyncio.create_task(self._renew_claims())] if self.claims else []
        everything = asyncio.gather(*tasks)
        status = "interrupted"
        store_failure: StoreError | None = None
        try:
            done, _ = await asyncio.wait([everything, writer],
                                         return_when=asyncio.FIRST_COMPLETED)
            if writer in done:
                writer.result()  # the writer only ends early by failing: raise its error
            await everything
            self.writer.close()
            await writer
            status = "stopped" if self.stop_reason else "completed"
        except StoreError as exc:
            # The store cannot be written: stop sending at once (finally cancels the
            # workers); what it had written stays, and nothing more is tried on it.
            store_failure, status = exc, "failed"
            raise _stopped_by_store(exc) from exc
        finally:
            for task in [*tasks, writer, *renewer]:
                task.cancel()
            await asyncio.gather(*tasks, writer, *renewer, return_exceptions=True)
            if everything.done() and not everything.cancelled():
                everything.exception()  # retrieved here; the first failure already propagated
            # When only the journal failed, the store can still take what is pending.
            journal_failed = isinstance(store_failure, JournalError)
            late_failure, saved_all = None, False
            try:
                if status == "interrupted" or journal_failed:
                    self.writer.flush_now()  # waits for an in-flight write, saves the rest
                if status != "failed" or journal_failed:
                    self._keep_chunk_progress()
                    saved_all = True
            except StoreError as exc:
                late_failure = store_failure = exc
                status = "failed"
            finally:
                self.writer.shutdown()
                # Kept for the next run to replay unless everything reached the store (a
                # second Ctrl-C while saving, under plain asyncio.run, keeps it too).
                self.journal.close(delete=saved_all)
                if self.claims is not None:
                    # After the last write and the journal's lock (another run on this
                    # machine claiming them next replays what the store did not take).
                    self._release_claims()
            self._count_refused()
            duration_ms = (self.clock() - started) * 1000
            try:
                self.store.finish_run(self.run_id, status=status, counters=self.counters,
                                      duration_ms=duration_ms,
                                      stopped_reason=self.stop_reason or (
                                          str(store_failure) if store_failure else None))
            except StoreError:
                if store_failure is None:
                    raise  # a store that failed already said why; this would only repeat it
            # Why it ended early, if it did: as the bar shows it and a partial result says.
            ended_early = self.stop_reason or (str(store_failure) if store_failure else (
                INTERRUPTED if status == "interrupted" else None))
            if self.progress:
                self.counters.stopped_reason = ended_early
                self.progress.close(self.counters)
            c = self.counters
            result = SeedResult(run_id=self.run_id, total=c.processed, successful=c.successful,
                                failed=c.failed, skipped=c.skipped, total_triples=c.triples,
                                duration_ms=duration_ms,
                                # Only what finished, when it ended early.
                                results=tuple(r for r in self.results if r is not None),
                                stopped_reason=self.stop_reason or (
                                    INTERRUPTED if status == "interrupted" else None),
                                chunked_conversations=c.chunked,
                                prompt_tokens=c.prompt_tokens,
                                completion_tokens=c.completion_tokens, cost=c.cost,
                                claimed_elsewhere=self.claimed_elsewhere)
            if self.on_end is not None:
                self.on_end(result)
            if late_failure is not None:
                raise _stopped_by_store(late_failure) from late_failure
        return result

    # --- claims (several workers, one store) ----------------------------------------------

    async def _claim(self, jobs: list[_Job]) -> list[_Job]:
        """The window's jobs this worker now holds; those another worker holds are skipped.

        Then the ledger is asked again about the jobs claimed: a worker may have seeded one
        and released it between this run's ledger look-up and its claim (or before this run
        began, its ledger looked empty). A dead worker's journal on this machine is replayed
        first, so what it finished but had not written counts as seeded here. Forced, only
        what was seeded since the backfill began counts (``ClaimSettings.backfill_started``;
        without it, nothing does).
        """
        if not jobs or self.stop_reason:
            return jobs  # (a stopped run skips them all, unsent)
        keys = [(j.entity_id, j.conversation.id, j.content_hash) for j in jobs]
        asked = time.monotonic()
        lapsed = bool(self.claimed) and asked >= self.claims_valid_until
        held = await self._in_store(functools.partial(
            self.store.claim, keys, worker=self.claims.worker,
            lease_seconds=self.claims.lease_seconds))
        if not lapsed:  # (after a lapse, only a renewal can tell none was taken over)
            self._claims_held_until(asked)
        self.claimed.update(keys[index] for index in held)
        for index, job in enumerate(jobs):
            if index not in held:
                self.claimed_elsewhere += 1
                self._record_skipped(job, CLAIMED_ELSEWHERE)
        jobs = [job for index, job in enumerate(jobs) if index in held]
        # Forced, only what this backfill seeded counts (when it says when it began).
        since = self.claims.backfill_started if self.force else None
        if not jobs or (self.force and since is None):
            return jobs
        if self.journal_directory is not None:
            await self._in_store(replay, self.journal_directory, self.store)
        mine = [keys[index] for index in sorted(held)]
        # A store that holds claims takes since= (None: whenever seeded).
        seeded = await self._in_store(
            functools.partial(self.store.already_seeded, since=since), mine)
        for index in sorted(seeded):
            self._record_skipped(jobs[index], ALREADY_SEEDED)
        return [job for index, job in enumerate(jobs) if index not in seeded]

    async def _renew_claims(self) -> None:
        """Renew the claims every third of the lease while the run goes. Should renewal
        fail for a whole lease, other workers may take the claims over: the run stops
        sending rather than send what they may send too.

        Real time, not the injectable clock: leases run by the database's clock."""
        lease = self.claims.lease_seconds
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self._renew():
                    self._claims_lost()
                renewed = time.monotonic()
            except StoreError as exc:
                if time.monotonic() - renewed >= lease and self.stop_reason is None:
                    self.stop_reason = (f"its claims on conversations could not be renewed "
                                        f"for {lease:g} s ({exc}), so other runs may take "
                                        f"them over; run again to send the rest")
                    self.stop_cause = "claims lost"

    async def _renew(self) -> bool:
        """Renew this worker's leases: whether all its claims are still its own (then they
        hold a lease from now; else some were taken over while it lagged, and none hold).

        Raises:
            StoreError: the renewal failed.
        """
        asked = time.monotonic()
        holding = await self._in_store(self.store.renew_claims, self.claims.worker,
                                       self.claims.lease_seconds)
        if holding < len(self.claimed):
            self.claims_valid_until = float("-inf")
            return False
        self._claims_held_until(asked)
        return True

    def _claims_held_until(self, asked: float) -> None:
        """A claim or renewal asked at ``asked`` (this clock) holds until ``asked`` plus the
        lease at least: the database dated it later."""
        self.claims_valid_until = max(self.claims_valid_until, asked + self.claims.lease_seconds)

    async def _claims_hold(self) -> bool:
        """Whether this worker may send what it claimed. When the lease may have run out
        (its loop stalled: a long notebook cell, a debugger), the claims are renewed first:
        all still this worker's means nobody took one over meanwhile, and it goes on."""
        if time.monotonic() < self.claims_valid_until:
            return True
        async with self.renewing:
            if time.monotonic() >= self.claims_valid_until and self.stop_reason is None:
                try:
                    await self._renew()
                except StoreError:  # (the renewal task says why, if it keeps failing)
                    self.claims_valid_until = float("-inf")
        return not self._claims_lost()

    def _claims_lost(self) -> bool:
        """Whether this worker's leases may have run out (its loop stalled, renewal lagged):
        others may have taken its conversations over, so it must send no more of them."""
        if time.monotonic() < self.claims_valid_until:
            return False
        if self.stop_reason is None:
            self.stop_reason = (f"its claims on conversations were not renewed within their "
                                f"lease of {self.claims.lease_seconds:g} s, so other runs "
                                f"may have taken them over; run again to send the rest")
            self.stop_cause = "claims lost"
        return True

    def _release_claims(self) -> None:
        """Free the worker's claims at the end of the run (called on the loop, as the run's
        last writes are: the run is over)."""
        try:
            self.store.release_claims(self.claims.worker)
        except StoreError:
            pass  # the store is failing (the run says so); the claims run out with the lease

    # --- producer: validation, ledger, queue ----------------------------------------------

    async def _produce(self) -> None:
        """Validate, plan and queue every conversation, in windows that may span several
        SeedData: one ledger look-up per window however the input is split into entities
        (an interleaved JSONL file gives one SeedData per line)."""
        position = 0
        window: list[_Pending] = []
        size = FIRST_WINDOW
        turn = _Turn()
        for seed in self.seeds:
            if not isinstance(seed, SeedData):
                raise InvalidInputError(f"expected SeedData, got {type(seed).__name__}")
            check_ledger = await self._entity_in_ledger(seed.entity_id)
            too_long = _id_too_long(seed, self.max_id_length)
            for _, parsed in check_conversations(seed):
                window.append(_Pending(seed, position, parsed, check_ledger, too_long))
                position += 1
                if len(window) >= size:
                    await self._dispatch(window, turn)
                    window, size = [], min(size * 2, LEDGER_WINDOW)
                await turn.pause_if_over()
        if window:
            await self._dispatch(window, turn)
        for _ in range(self.config.batch_size):
            await self.queue.put((_LAST, position, None))

    async def _entity_in_ledger(self, entity_id: str) -> bool:
        """Whether the ledger has any conversation of this entity (asked once per entity)."""
        if self.ledger_empty:
            return False
        known = self.entities_in_ledger.get(entity_id)
        if known is None:
            found = await self._in_store(self.store.seeded_entities, {entity_id})
            known = self.entities_in_ledger[entity_id] = bool(found)
        return known

    async def _dispatch(self, window: list[_Pending], turn: _Turn) -> None:
        jobs = await self._plan_window(window, turn)
        # Most requests first: a conversation of many chunks sends them one after another,
        # so started last it would finish last, with the window empty around it. Results
        # still take their input positions. Put in that order too, so that a full queue
        # takes the giants first.
        jobs.sort(key=lambda job: -_requests_left(job))
        for job in jobs:
            if self.stop_reason:
                self._record_skipped(job, self._stopped("before it was sent"))
            else:
                await self.queue.put((-_requests_left(job), job.position, job))
        await self.writer.wait_for_room()

    async def _plan_window(self, window: list[_Pending], turn: _Turn) -> list[_Job]:
        jobs, ledger_checked = [], []
        for item in window:
            await turn.pause_if_over()
            seed, position, parsed = item.seed, item.position, item.parsed
            if self.keep_results:
                self.results.append(None)
            if isinstance(parsed, Invalid) or item.too_long:
                cid = parsed.conversation_id if isinstance(parsed, Invalid) else parsed.id
                self._record(position, _failed(seed.entity_id, cid,
                                               item.too_long or parsed.reason),
                             seed.process_id)
                continue
            over = needs_chunks(parsed.messages, self.config)
            if over and not self.config.chunk_large_conversations:
                plan = plan_conversation(parsed, self.config)
                self._record(position, _failed(seed.entity_id, parsed.id,
                                               oversize_reason(parsed, plan, self.config)),
                             seed.process_id)
                continue
            chunks = split_messages(parsed.messages, self.config) if over else [
                parsed.messages]
            job = _Job(position, seed.entity_id, seed.process_id, parsed,
                       parsed.content_hash(), chunks)
            # An entity's conversation id is sent once per run, however many records hold
            # it: a later copy with the same content is skipped; one with other content
            # fails, as the first may be sent already and the store keeps one per id.
            key, copy = _run_key(job), _first_copy(job)
            first = self.first_copies.get(key)
            if first is not None:
                if first[:8] == copy[:8]:
                    self._record_skipped(job, "already in this run (the input holds it "
                                              "twice, same id and content)")
                else:
                    reason = repeated_id_reason(parsed.id, seed.entity_id,
                                                int.from_bytes(first[8:]), position)
                    self._record(position, _failed(seed.entity_id, parsed.id, reason),
                                 seed.process_id)
                continue
            self.first_copies[key] = copy
            jobs.append(job)
            ledger_checked.append(item.check_ledger)
        if not self.force and any(ledger_checked):
            keys = [(j.entity_id, j.conversation.id, j.content_hash)
                    for j, check in zip(jobs, ledger_checked) if check]
            asked = [j for j, check in zip(jobs, ledger_checked) if check]
            seeded = await self._in_store(self.store.already_seeded, keys)
            skipped = {id(asked[index]) for index in seeded}
            for index in sorted(seeded):
                self._record_skipped(asked[index], ALREADY_SEEDED)
            jobs = [job for job in jobs if id(job) not in skipped]
        if self.claims is not None:
            jobs = await self._claim(jobs)
        # After the ledger (and the claim): what another run stopped in the middle of.
        return await self._with_partials(jobs)

    async def _with_partials(self, jobs: list[_Job]) -> list[_Job]:
        """Chunked conversations an earlier run stopped in the middle of resume there."""
        # Asked whatever the ledger holds: a stopped conversation is not in the ledger.
        keys = [(j.entity_id, j.conversation.id, j.content_hash)
                for j in jobs if len(j.chunks) > 1]
        partials = await self._in_store(self.store.partials, keys) if keys else {}
        if not partials or self.force:
            return jobs
        return [replace(j, resume=found) if (found := partials.get(
            (j.entity_id, j.conversation.id, j.content_hash))) is not None
            and found.chunk_count == len(j.chunks) else j for j in jobs]

    # --- workers ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while (job := (await self.queue.get())[2]) is not None:
            if self.stop_reason or (self.claims is not None and not await self._claims_hold()):
                self._record_skipped(job, self._stopped("before it was sent"))
                continue
            result, extraction = await self._process(job)
            self._record(job.position, result, job.process_id, job.content_hash, extraction,
                         job.conversation)
            await self.writer.wait_for_room()
        # Nothing left to start: what is in flight is the run's tail, so results are
        # gathered only briefly, and the run ends soon after its last answer.
        self.writer.hurry()

    async def _process(self, job: _Job) -> tuple[ConversationResult, Extraction | None]:
        """Send a conversation's chunks in order; its result, and the merged extraction when
        it succeeded.

        The result's tokens add up ``Extraction.usage`` over the chunks this run sent, also
        when the conversation then failed or the run stopped (those were billed). Chunks an
        earlier run sent (resumed from its partial progress) were paid in that run and are
        not counted again. A failed attempt the backend says was billed (a malformed answer:
        ``AugmentationError.usage``) counts too; what a server bills for other failures
        without saying so cannot be seen here.
        """
        started = self.clock()
        cid, count = job.conversation.id, len(job.chunks)
        answers: list[Extraction] = []  # what each chunk returned, in order
        spent: list[Usage] = []  # the tokens of every answer, failed attempts' included
        summary = None
        sources = None  # where the backend says each fact was said (one chunk only)
        done = first = 0
        warnings = job.conversation.warnings
        if count > 1:
            warnings += (f"split into {count} requests to stay within the limits",)
        if job.resume is not None:  # an earlier run paid for the first chunks: go on after
            done = first = job.resume.chunks_done
            summary = job.resume.summary
            answers.append(job.resume.extraction)
            warnings += (f"resumed after chunk {first} of {count} (sent in an earlier run)",)
        try:
            for index, chunk in enumerate(job.chunks[first:], start=first):
                extraction = await self._send(AugmentationRequest(
                    entity_id=job.entity_id, conversation_id=cid, messages=chunk,
                    process_id=job.process_id, summary=summary, chunk_index=index,
                    chunk_count=count), spent)
                done += 1
                if extraction.usage is not None:
                    spent.append(extraction.usage)
                answers.append(extraction)
                warnings += extraction.warnings
                summary = extraction.summary or summary
                # Positions in a chunk are the conversation's only when it was not split.
                sources = extraction.sources if chunk is job.conversation.messages else None
                if done < count and self.journal.on_disk:  # paid for: journaled now
                    self.journal.chunk_done(_progress(job, done, summary, answers))
        except (_RunStopped, _GaveUp) as stop:
            if done > first:  # kept at the end of the run: the next run sends the rest
                self.journal.chunk_done(_progress(job, done, summary, answers))
            partly = f" after {done} of {count} chunks" if done else ""
            if isinstance(stop, _GaveUp):
                kept = (f"; the {done} chunks done are kept and the next run sends the rest"
                        if done else "")
                error = f"conversation {cid!r}: {stop}{partly}{kept}"
                return ConversationResult(
                    conversation_id=cid, entity_id=job.entity_id, status="failed",
                    error=error, reason=short_reason(error, cid), chunks_processed=done,
                    duration_ms=self._ms_since(started), warnings=warnings,
                    **self._accounting(spent)), None
            return ConversationResult(
                conversation_id=cid, entity_id=job.entity_id, status="skipped",
                reason=(self._stopped(f"{partly.lstrip()}; the next run sends the rest")
                        if done else self._stopped("before it finished; the next run sends "
                                                   "it")),
                chunks_processed=done, duration_ms=self._ms_since(started),
                warnings=warnings, **self._accounting(spent)), None
        # Answers a backend says are clean need no checks, unless an earlier run's are in.
        clean = self.clean_answers and job.resume is None
        extraction, changed = _merged(summary, answers, sources, clean=clean), False
        if not clean:
            extraction, changed = safe_extraction(extraction)
        if changed:
            warnings += ("unstorable characters replaced (in the backend's answer)",)
        # Where each fact was said, found here, a conversation at a time between answers: in
        # the writer's thread this Python work would hold the GIL through whole batches, and
        # each request's I/O on the loop would wait for it (5 ms a turn).
        extraction = with_sources(extraction, job.conversation.messages)
        return ConversationResult(
            conversation_id=cid, entity_id=job.entity_id, status="succeeded",
            triples_count=len(extraction.triples), summary=extraction.summary, chunks_processed=done,
            duration_ms=self._ms_since(started), warnings=warnings,
            **self._accounting(spent)), extraction

    def _accounting(self, spent: list[Usage]) -> dict[str, Any]:
        """A result's token fields: nothing when no request reported tokens."""
        if not spent:
            return {}
        usage = sum(spent[1:], spent[0])
        cost = self.pricing.cost(usage) if self.pricing is not None else None
        return {"prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens, "cost": cost}

    async def _send(self, request: AugmentationRequest, spent: list[Usage]) -> Extraction:
        """One chunk, retried by the rules; what failed attempts were billed for (a
        backend's ``AugmentationError.usage``) is appended to ``spent``."""
        # Each kind of failure has its own budget: a 429 waited out is not a transient retry.
        retries = None  # made at the first failure: most requests have none
        while True:
            try:
                return await self._attempt(request)
            except _RunStopped:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure goes through the retry rules
                if (billed := getattr(exc, "usage", None)) is not None:
                    spent.append(billed)
                retries = retries or RetryState(clock=self.clock)
                decision = retries.decide(exc, max_retries=self.config.max_retries,
                                          retry_delay=self.config.retry_delay,
                                          jitter=self.jitter())
                if decision.action == "stop_run":
                    if self.stop_reason is None:
                        self.stop_reason, self.stop_cause = decision.reason, _stop_cause(exc)
                    raise _RunStopped(decision.reason) from exc
                if decision.action == "give_up":
                    tries = (f" (after {retries.attempts} attempts)" if retries.attempts > 1
                             else "")
                    raise _GaveUp(decision.reason + tries) from exc
                self.counters.retries += 1
                if isinstance(exc, RateLimitedError) and exc.retry_after:
                    self.gate.hold(decision.delay)  # the service said when: everyone waits
                await self.sleep(decision.delay)

    async def _attempt(self, request: AugmentationRequest) -> Extraction:
        """One try, within the window: how the service answers tells the window how many
        requests it takes at once."""
        token = await self.window.acquire()
        outcome = "failed"
        try:
            await self.gate.wait()
            if self.stop_reason:
                raise _RunStopped(self.stop_reason)
            extraction = await self._augment(request)
            outcome = "ok"
            return extraction
        except RateLimitedError as exc:
            if not exc.retry_after:  # over its capacity: fewer at once, not everyone waiting
                outcome = "refused"
            raise
        finally:
            self.window.release(token, outcome)
            if outcome == "refused" or self.counters.window is not None:
                self.counters.window = self.window.current  # shown once the service refused

    async def _augment(self, request: AugmentationRequest) -> Extraction:
        if not self.requires_network:
            return await self.backend.augment(request)  # CPU-bound: nothing to wait for
        if self.backend_ready is not None:
            await self.backend_ready(request)  # client-side rate limits: not the answer's time
        timeout = self.config.request_timeout
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout):
                return await self.backend.augment(request)
        except TimeoutError as exc:
            raise TransientError(f"no answer within {timeout:g} s",
                                 conversation_id=request.conversation_id) from exc

    # --- bookkeeping --------------------------------------------------------------------------

    def _stopped(self, when: str) -> str:
        """The reason of a conversation the run stopped before it finished:
        ``"run stopped (quota exhausted) before it was sent"``."""
        cause = f" ({self.stop_cause})" if self.stop_cause else ""
        return f"run stopped{cause} {when}"

    def _record_skipped(self, job: _Job, reason: str) -> None:
        """A conversation not sent; ``reason`` says why (it is no error: ``error`` is None)."""
        self._record(job.position, ConversationResult(
            conversation_id=job.conversation.id, entity_id=job.entity_id, status="skipped",
            reason=reason), job.process_id, job.content_hash)

    def _record(self, position: int, result: ConversationResult, process_id: str | None,
                content_hash: str | None = None, extraction: Extraction | None = None,
                conversation: Conversation | None = None) -> None:
        result = safe_result(result)  # the last guard: nothing unstorable reaches the store
        record = ResultRecord(result, content_hash, process_id, extraction,
                              conversation if extraction is not None else None)
        if self.keep_results:
            self.results[position] = result
        self.counters.count(result)
        self.writer.add(record)
        if extraction is not None:
            # Journaled before the writer can act on it (it runs at the next await); should
            # the journal fail, the writer still has the record for the store.
            self.journal.finished(record)
        if self.on_progress is not None:
            self.on_progress(self.counters.processed, self.counters.total, result)
        if self.progress is not None:
            self.progress.update(self.counters, result)

    def _keep_chunk_progress(self) -> None:
        """Chunked conversations this run did not finish (quota stop, failure, Ctrl-C) keep
        what their finished chunks returned: the next run sends only the rest."""
        for partial in self.journal.open_partials.values():
            self.store.save_partial(self.run_id, partial)

    def _count_refused(self) -> None:
        """Finished conversations the store refused count as failed, as they are stored."""
        refused = {}
        for record, stored in self.writer.refused:
            if record.result.status == "succeeded":
                self.counters.successful -= 1
                self.counters.failed += 1
                self.counters.triples -= record.result.triples_count
            refused[record.result.entity_id, record.result.conversation_id] = stored.result
        if refused and self.keep_results:
            self.results = [refused.get((r.entity_id, r.conversation_id), r)
                            if r is not None else r for r in self.results]

    def _ms_since(self, started: float) -> float:
        return (self.clock() - started) * 1000


def _merged(summary: str | None, answers: list[Extraction], sources: Any = None, *,
            clean: bool = False) -> Extraction:
    """What the chunks of one conversation returned (``answers``), as one Extraction with
    this ``summary`` and ``sources``. Chunks often restate a fact: each triple, fact and
    attribute is kept once (``clean``: each answer's are already)."""
    if len(answers) == 1:  # most conversations: the answer itself, when it is as merged
        only = answers[0]
        if (only.summary == summary and only.sources is sources and only.usage is None
                and not only.warnings and (clean or _distinct(only.triples)
                                           and _distinct(only.facts)
                                           and _distinct(only.attributes))):
            return only
    return Extraction(
        triples=tuple(dict.fromkeys(t for answer in answers for t in answer.triples)),
        facts=tuple(dict.fromkeys(f for answer in answers for f in answer.facts)),
        summary=summary, sources=sources,
        attributes=tuple(dict.fromkeys(a for answer in answers for a in answer.attributes)))


def _distinct(values: tuple) -> bool:
    return len(values) < 2 or len(set(values)) == len(values)


def _progress(job: _Job, done: int, summary: str | None, answers: list[Extraction]
              ) -> PartialRecord:
    return PartialRecord(entity_id=job.entity_id, process_id=job.process_id,
                         conversation_id=job.conversation.id, content_hash=job.content_hash,
                         chunks_done=done, chunk_count=len(job.chunks), summary=summary,
                         extraction=_merged(summary, answers))


def _stopped_by_store(cause: StoreError) -> StoreError:
    if isinstance(cause, JournalError):
        return StoreError(f"the run stopped because its journal cannot be written: {cause}. "
                          f"What finished is saved in the store, and running again continues "
                          f"from there")
    return StoreError(f"the run stopped because the store cannot be written: {cause}. What "
                      f"finished is kept (in the journal, when the store could not take it), "
                      f"and running again continues from there")


def _failed(entity_id: str, conversation_id: str, error: str) -> ConversationResult:
    return ConversationResult(conversation_id=conversation_id, entity_id=entity_id,
                              status="failed", error=error,
                              reason=short_reason(error, conversation_id))


class _Turn:
    """The producer's share of the loop: it pauses (lets answers in and requests out) once
    it has worked ``PRODUCER_TURN_SECONDS`` since it last paused."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = time.perf_counter()

    async def pause_if_over(self) -> None:
        if time.perf_counter() - self.started >= PRODUCER_TURN_SECONDS:
            await asyncio.sleep(0)
            self.started = time.perf_counter()


@dataclass(slots=True)
class _Pending:
    """A conversation read and judged, waiting for its window's ledger look-up."""

    seed: SeedData
    position: int
    parsed: Any
    check_ledger: bool
    too_long: str | None


def _run_key(job: _Job) -> bytes:
    """16 bytes that tell one (entity, conversation id) of a run from another (a million
    take ~100 MB less than the tuples would)."""
    text = f"{job.entity_id}\x00{job.conversation.id}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _first_copy(job: _Job) -> bytes:
    """What a run keeps of a conversation's first copy, in 16 bytes: 8 of its content hash
    (to tell a repeat of the same content from other content), then its input position."""
    return bytes.fromhex(job.content_hash[:16]) + job.position.to_bytes(8)


def _id_too_long(seed: SeedData, limit: int | None) -> str | None:
    """Why the store cannot hold this seed's entity or process id, or None."""
    if limit is None:
        return None
    for kind, value in (("entity", seed.entity_id), ("process", seed.process_id)):
        if value is not None and len(value) > limit:
            return (f"{kind} id {value[:40]!r}... is {len(value):,} characters; this store "
                    f"holds ids of at most {limit} (nothing was sent)")
    return None
