"""The seeding engine: validate, skip what the ledger has, send with bounded concurrency,
retry, and hand each finished conversation to the store as soon as it finishes.

Concurrency is a sliding window: ``batch_size`` workers pull conversations from one queue, so
at most ``batch_size`` requests are in flight and a new one starts as soon as any finishes.
The chunks of one conversation are sent in order by the same worker, each carrying the summary
of the chunk before it. Results keep input order; progress reports completion order.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from ._gc import fewer_young_collections
from .backends.base import AugmentationBackend, AugmentationRequest
from .chunking import oversize_reason, plan_conversation, split_messages
from .errors import InvalidInputError, RateLimitedError, TransientError
from .models import (Conversation, ConversationResult, Extraction, Message, SeedConfig,
                     SeedCounters, SeedData, SeedResult, Triple)
from .retry import decide_retry
from .stores.base import ResultRecord, Store
from .stores.writer import BatchWriter
from .validation import Invalid, check_conversations, safe_extraction, safe_result

# Conversations validated and checked against the ledger together (one query per window).
# Windows start small, so the first requests go out at once, and double up to the limit.
FIRST_WINDOW = 64
LEDGER_WINDOW = 2000

OnProgress = Callable[[int, "int | None", ConversationResult], Any]


class ProgressSink(Protocol):
    """What the engine tells a progress display (see :mod:`memori_nb.progress`)."""

    def start(self, counters: SeedCounters) -> None: ...

    def update(self, counters: SeedCounters, result: ConversationResult) -> None: ...

    def close(self, counters: SeedCounters) -> None: ...


@dataclass(frozen=True, slots=True)
class _Job:
    position: int
    entity_id: str
    process_id: str | None
    conversation: Conversation
    content_hash: str
    chunks: list[tuple[Message, ...]]


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


async def seed_all(seeds: Iterable[SeedData], *, backend: AugmentationBackend,
                   store: Store, config: SeedConfig | None = None,
                   on_progress: OnProgress | None = None, progress: ProgressSink | None = None,
                   force: bool = False, sleep: Callable[[float], Any] = asyncio.sleep,
                   clock: Callable[[], float] = time.monotonic,
                   jitter: Callable[[], float] = random.random,
                   keep_results: bool = True) -> SeedResult:
    """Seed the conversations of one or more entities in one run.

    Args:
        seeds: one :class:`SeedData` per entity.
        backend: the augmentation backend.
        store: where results, the ledger and memories are written (built if needed).
        config: limits, retries and ``batch_size`` (the sliding-window size).
        on_progress: ``on_progress(processed, total, result)`` after each conversation.
        progress: a progress display (see :mod:`memori_nb.progress`).
        force: send conversations again even if the ledger says they were seeded.
        sleep, clock, jitter: injectable for tests (retry waits, timings, backoff jitter).
        keep_results: keep every ConversationResult in the returned SeedResult. Turn it off
            for streamed inputs of millions of conversations: the counts stay exact and the
            per-conversation results are in the store (``conversation_results``).

    Returns:
        The :class:`SeedResult`, results in input order.

    Raises:
        StoreError: a write to the store failed (what was written before stays).
        asyncio.CancelledError: the run was cancelled; everything finished is saved first.
    """
    run = _SeedRun(seeds, backend=backend, store=store, config=config or SeedConfig(),
                   on_progress=on_progress, progress=progress, force=force, sleep=sleep,
                   clock=clock, jitter=jitter, keep_results=keep_results)
    return await run.execute()


class _SeedRun:
    def __init__(self, seeds: Iterable[SeedData], *, backend, store, config, on_progress,
                 progress, force, sleep, clock, jitter, keep_results) -> None:
        # A list is sized up front; any other iterable is consumed lazily, one entity at a
        # time, so a streamed source never has to be held in memory.
        self.seeds = seeds if isinstance(seeds, (list, tuple)) else iter(seeds)
        self.keep_results = keep_results
        self.backend, self.store, self.config = backend, store, config
        self.on_progress, self.progress, self.force = on_progress, progress, force
        self.sleep, self.clock, self.jitter = sleep, clock, jitter
        self.run_id = uuid.uuid4().hex
        sizes = [s.size for s in self.seeds] if isinstance(self.seeds, (list, tuple)) else [None]
        self.counters = SeedCounters(total=None if None in sizes else sum(sizes))
        self.results: list[ConversationResult | None] = []
        self.stop_reason: str | None = None
        self.gate = _RateGate(clock, sleep)
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=config.batch_size * 4)
        self.requires_network = getattr(backend, "requires_network", True)
        # With a network backend the writer works on a thread, so requests keep flowing
        # while the store writes; a CPU-only backend has no I/O to overlap, and a store
        # bound to one thread (an in-memory sqlite3 connection) must be used inline.
        self.store_threadsafe = getattr(store, "threadsafe", True)
        self.writer = BatchWriter(store, self.run_id,
                                  in_thread=self.requires_network and self.store_threadsafe)
        self.max_id_length = getattr(store, "max_id_length", None)

    async def _in_store(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call a store method that may block: on a thread when the store allows it."""
        if self.store_threadsafe:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def execute(self) -> SeedResult:
        with fewer_young_collections():
            return await self._execute()

    async def _execute(self) -> SeedResult:
        started = self.clock()
        await self._in_store(self.store.build)
        # Entities never seeded before need no ledger look-ups at all; None means "ask per
        # entity as the stream reaches it".
        self.entities_in_ledger = None
        if await self._in_store(self.store.ledger_is_empty):
            self.entities_in_ledger = set()
        elif isinstance(self.seeds, (list, tuple)):
            self.entities_in_ledger = await self._in_store(
                self.store.seeded_entities, {seed.entity_id for seed in self.seeds})
        self.store.start_run(self.run_id, backend=getattr(self.backend, "name", "custom"),
                             config=self.config, force=self.force)
        if self.progress:
            self.progress.start(self.counters)
        tasks = [asyncio.create_task(self._produce())]
        tasks += [asyncio.create_task(self._work()) for _ in range(self.config.batch_size)]
        writer = asyncio.create_task(self.writer.run())
        everything = asyncio.gather(*tasks)
        status = "interrupted"
        try:
            done, _ = await asyncio.wait([everything, writer],
                                         return_when=asyncio.FIRST_COMPLETED)
            if writer in done:
                writer.result()  # the writer only ends early by failing: raise its error
            await everything
            self.writer.close()
            await writer
            status = "stopped" if self.stop_reason else "completed"
        finally:
            for task in [*tasks, writer]:
                task.cancel()
            await asyncio.gather(*tasks, writer, return_exceptions=True)
            if everything.done() and not everything.cancelled():
                everything.exception()  # retrieved here; the first failure already propagated
            if status == "interrupted":
                self.writer.flush_now()  # waits for an in-flight write, then saves the rest
            self.writer.shutdown()
            self._count_refused()
            duration_ms = (self.clock() - started) * 1000
            self.store.finish_run(self.run_id, status=status, counters=self.counters,
                                  duration_ms=duration_ms, stopped_reason=self.stop_reason)
            if self.progress:
                self.progress.close(self.counters)
        c = self.counters
        return SeedResult(run_id=self.run_id, total=c.processed, successful=c.successful,
                          failed=c.failed, skipped=c.skipped, total_triples=c.triples,
                          duration_ms=duration_ms, results=tuple(self.results),
                          stopped_reason=self.stop_reason,
                          chunked_conversations=c.chunked)

    # --- producer: validation, ledger, queue ----------------------------------------------

    async def _produce(self) -> None:
        position = 0
        for seed in self.seeds:
            if not isinstance(seed, SeedData):
                raise InvalidInputError(f"expected SeedData, got {type(seed).__name__}")
            if self.entities_in_ledger is None:
                check_ledger = bool(await self._in_store(self.store.seeded_entities,
                                                         {seed.entity_id}))
            else:
                check_ledger = seed.entity_id in self.entities_in_ledger
            too_long = _id_too_long(seed, self.max_id_length)
            base = position
            items = ((base + i, parsed) for i, parsed in check_conversations(seed))
            size = FIRST_WINDOW
            while window := list(islice(items, size)):
                size = min(size * 2, LEDGER_WINDOW)
                position += len(window)
                jobs = await self._plan_window(seed, window, check_ledger, too_long)
                for job in jobs:
                    if self.stop_reason:
                        self._record_skipped(job, f"not sent: the run stopped "
                                                  f"({self.stop_reason})")
                    else:
                        await self.queue.put(job)
                await self.writer.wait_for_room()
        for _ in range(self.config.batch_size):
            await self.queue.put(None)

    async def _plan_window(self, seed: SeedData, window: list[tuple[int, Any]],
                           check_ledger: bool, too_long: str | None) -> list[_Job]:
        jobs = []
        for position, parsed in window:
            if self.keep_results:
                self.results.append(None)
            if isinstance(parsed, Invalid) or too_long:
                cid = parsed.conversation_id if isinstance(parsed, Invalid) else parsed.id
                self._record(position, _failed(seed.entity_id, cid, too_long or parsed.reason),
                             seed.process_id)
                continue
            plan = plan_conversation(parsed, self.config)
            if plan.over_limit and not self.config.chunk_large_conversations:
                self._record(position, _failed(seed.entity_id, parsed.id,
                                               oversize_reason(parsed, plan, self.config)),
                             seed.process_id)
                continue
            chunks = split_messages(parsed.messages, self.config) if plan.over_limit else [
                parsed.messages]
            jobs.append(_Job(position, seed.entity_id, seed.process_id, parsed,
                             parsed.content_hash(), chunks))
        if self.force or not jobs or not check_ledger:
            return jobs
        keys = [(j.entity_id, j.conversation.id, j.content_hash) for j in jobs]
        seeded = await self._in_store(self.store.already_seeded, keys)
        for index in sorted(seeded):
            self._record_skipped(jobs[index], "already seeded with the same content in an "
                                              "earlier run (force=True sends it again)")
        return [job for index, job in enumerate(jobs) if index not in seeded]

    # --- workers ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while (job := await self.queue.get()) is not None:
            if self.stop_reason:
                self._record_skipped(job, f"not sent: the run stopped ({self.stop_reason})")
                continue
            result, extraction = await self._process(job)
            self._record(job.position, result, job.process_id, job.content_hash, extraction,
                         job.conversation)
            await self.writer.wait_for_room()

    async def _process(self, job: _Job) -> tuple[ConversationResult, Extraction | None]:
        started = self.clock()
        cid, count = job.conversation.id, len(job.chunks)
        triples: list[Triple] = []
        facts: list[str] = []
        attributes: list[str] = []
        summary = None
        done = 0
        warnings = job.conversation.warnings
        if count > 1:
            warnings += (f"split into {count} requests to stay within the limits",)
        try:
            for index, chunk in enumerate(job.chunks):
                extraction = await self._send(AugmentationRequest(
                    entity_id=job.entity_id, conversation_id=cid, messages=chunk,
                    process_id=job.process_id, summary=summary, chunk_index=index,
                    chunk_count=count))
                done += 1
                triples.extend(extraction.triples)
                facts.extend(extraction.facts)
                attributes.extend(extraction.attributes)
                summary = extraction.summary or summary
        except _RunStopped as stop:
            partly = f" after {done} of {count} chunks" if done else ""
            return ConversationResult(
                conversation_id=cid, entity_id=job.entity_id, status="skipped",
                error=f"not finished{partly}: the run stopped ({stop}); run again to send it",
                chunks_processed=done, duration_ms=self._ms_since(started),
                warnings=warnings), None
        except _GaveUp as failure:
            return ConversationResult(
                conversation_id=cid, entity_id=job.entity_id, status="failed",
                error=f"conversation {cid!r}: {failure}", chunks_processed=done,
                duration_ms=self._ms_since(started), warnings=warnings), None
        # Chunks of one conversation often restate a fact: keep each triple and fact once.
        triples = list(dict.fromkeys(triples))
        extraction = Extraction(triples=tuple(triples), facts=tuple(dict.fromkeys(facts)),
                                summary=summary, attributes=tuple(dict.fromkeys(attributes)))
        extraction, changed = safe_extraction(extraction)
        if changed:
            warnings += ("unstorable characters replaced (in the backend's answer)",)
        return ConversationResult(
            conversation_id=cid, entity_id=job.entity_id, status="succeeded",
            triples_count=len(triples), summary=extraction.summary, chunks_processed=done,
            duration_ms=self._ms_since(started), warnings=warnings), extraction

    async def _send(self, request: AugmentationRequest) -> Extraction:
        attempt = 0
        while True:
            await self.gate.wait()
            if self.stop_reason:
                raise _RunStopped(self.stop_reason)
            try:
                return await self._augment(request)
            except Exception as exc:  # noqa: BLE001 - every failure goes through decide_retry
                attempt += 1
                decision = decide_retry(exc, attempt, max_retries=self.config.max_retries,
                                        retry_delay=self.config.retry_delay,
                                        jitter=self.jitter())
                if decision.action == "stop_run":
                    self.stop_reason = self.stop_reason or decision.reason
                    raise _RunStopped(decision.reason) from exc
                if decision.action == "give_up":
                    tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise _GaveUp(decision.reason + tries) from exc
                self.counters.retries += 1
                if isinstance(exc, RateLimitedError):
                    self.gate.hold(decision.delay)
                await self.sleep(decision.delay)

    async def _augment(self, request: AugmentationRequest) -> Extraction:
        if not self.requires_network:
            return await self.backend.augment(request)  # CPU-bound: nothing to wait for
        timeout = self.config.request_timeout
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout):
                return await self.backend.augment(request)
        except TimeoutError as exc:
            raise TransientError(f"no answer within {timeout:g} s",
                                 conversation_id=request.conversation_id) from exc

    # --- bookkeeping --------------------------------------------------------------------------

    def _record_skipped(self, job: _Job, reason: str) -> None:
        self._record(job.position, ConversationResult(
            conversation_id=job.conversation.id, entity_id=job.entity_id, status="skipped",
            error=reason), job.process_id, job.content_hash)

    def _record(self, position: int, result: ConversationResult, process_id: str | None,
                content_hash: str | None = None, extraction: Extraction | None = None,
                conversation: Conversation | None = None) -> None:
        result = safe_result(result)  # the last guard: nothing unstorable reaches the store
        if self.keep_results:
            self.results[position] = result
        self.counters.count(result)
        self.writer.add(ResultRecord(result, content_hash, process_id, extraction,
                                     conversation if extraction is not None else None))
        if self.on_progress is not None:
            self.on_progress(self.counters.processed, self.counters.total, result)
        if self.progress is not None:
            self.progress.update(self.counters, result)

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


def _failed(entity_id: str, conversation_id: str, reason: str) -> ConversationResult:
    return ConversationResult(conversation_id=conversation_id, entity_id=entity_id,
                              status="failed", error=reason)


def _id_too_long(seed: SeedData, limit: int | None) -> str | None:
    """Why the store cannot hold this seed's entity or process id, or None."""
    if limit is None:
        return None
    for kind, value in (("entity", seed.entity_id), ("process", seed.process_id)):
        if value is not None and len(value) > limit:
            return (f"{kind} id {value[:40]!r}... is {len(value):,} characters; this store "
                    f"holds ids of at most {limit} (nothing was sent)")
    return None
