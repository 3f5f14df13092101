"""Backfills on a Dask cluster: shards of entities seeded in Dask workers into one shared SQL
store, under limits that hold for the whole cluster.

:func:`seed_distributed` splits a source into shards (a folder's or a list's files by size,
each worker reading its own; anything else read here and split by entity) and runs
:func:`seed_shard` (an ordinary engine run, one run in the ledger per shard) for each in a
Dask worker. Every worker writes into the same PostgreSQL database, claiming conversations in
its ledger before sending them, so two workers never send the same one and a killed worker's
shard is finished by another. Around the backend on each worker, :class:`ClusterBackend`
holds the cluster's limits: requests in flight (a ``distributed.Semaphore``), requests per
minute (a second semaphore whose leases are returned a minute after each request, so the
budget is one for the cluster, not divided) and the quota stop (a ``distributed.Event``:
when the service says the quota is used up to one worker, every worker stops). Workers report
counts through a ``distributed.Queue`` to one progress bar in the notebook; Ctrl-C there sets
another Event, which every shard watches (Dask's cancel does not stop a running task).

Dask is imported only when these functions run (``pip install 'memori_nb[dask]'``).

:func:`seed_shard` is also the function to call from other engines (Ray Data's
``map_batches``, Spark's ``mapInPandas``): see the README; there the limits are per task.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import secrets
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .backends import AugmentationBackend, resolve_backend
from .backends.base import AugmentationRequest, ensure_ready
from .errors import ConfigurationError, InvalidInputError, QuotaExceededError
from .models import (CLAIMED_ELSEWHERE, ClaimSettings, ConversationResult, Extraction,
                     SeedConfig, SeedCounters, SeedData, SeedResult)
from .stores.connection import conn_for_display, hide_password, is_sql_conn

INSTALL_HINT = "pip install 'memori_nb[dask]'"
# Worker processes of the LocalCluster made when no client is given.
DEFAULT_WORKERS = 2
# Shards per worker by default: a killed worker's shard is then a smaller share to redo.
# The LocalCluster made here runs them at once (a thread each): shards run one after another
# would each end in a tail with the window part empty.
SHARDS_PER_WORKER = 2
# How often a worker reports its counts to the notebook's bar.
REPORT_SECONDS = 0.25
# How often a worker asks whether another one ran out of quota, or the caller said stop.
STOP_POLL_SECONDS = 0.2
# How long Ctrl-C waits for the shards to save what finished.
CANCEL_WAIT_SECONDS = 30.0
# The window of a requests-per-minute budget.
MINUTE = 60.0


def _distributed():
    """The ``distributed`` package, or a clear error saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigurationError(f"seed_distributed runs on Dask, which is not installed: "
                                 f"{INSTALL_HINT}") from exc
    return distributed


# --- the key, as it travels ------------------------------------------------------------------

class Secret:
    """A value (an API key) that shows as ``***`` in every repr, str, log and dashboard.

    It is kept XOR-masked with a random pad, so the key's text is not in the pickled task a
    Dask scheduler holds either; :meth:`reveal` gives it back where it is used.

    Example:
        >>> key = Secret("sk-live-123")
        >>> key, key.reveal()
        (Secret('***'), 'sk-live-123')
    """

    __slots__ = ("_masked", "_pad")

    def __init__(self, value: str) -> None:
        data = value.encode("utf-8")
        self._pad = secrets.token_bytes(len(data))
        self._masked = bytes(a ^ b for a, b in zip(data, self._pad))

    def reveal(self) -> str:
        return bytes(a ^ b for a, b in zip(self._masked, self._pad)).decode("utf-8")

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):
        return (_unmask, (self._masked, self._pad))


def _unmask(masked: bytes, pad: bytes) -> Secret:
    secret = Secret.__new__(Secret)
    secret._masked, secret._pad = masked, pad
    return secret


# --- limits for the whole cluster --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClusterLimits:
    """What a worker needs to find one call's shared limits on the scheduler (by name)."""

    name: str
    max_in_flight: int
    requests_per_minute: float | None = None
    # Seconds after which a dead worker's leases return to the cluster.
    lease_timeout: float = 60.0
    # The window of the requests budget: a minute (shorter only in tests).
    window_seconds: float = MINUTE

    @property
    def in_flight_name(self) -> str:
        return f"{self.name}-in-flight"

    @property
    def rate_name(self) -> str:
        return f"{self.name}-per-minute"

    @property
    def rate_lease_timeout(self) -> float:
        """A dead worker's requests-per-minute leases come back no sooner than the window
        its requests were in (their release a window later died with it)."""
        return max(self.lease_timeout, self.window_seconds)

    def semaphores(self) -> list[tuple[str, int, float]]:
        """(name, size, lease timeout) of the call's semaphores."""
        limits = [(self.in_flight_name, self.max_in_flight, self.lease_timeout)]
        if self.requests_per_minute:
            limits.append((self.rate_name, int(self.requests_per_minute),
                           self.rate_lease_timeout))
        return limits

    @property
    def stop_name(self) -> str:
        return f"{self.name}-stop"

    @property
    def progress_name(self) -> str:
        return f"{self.name}-progress"

    @property
    def cancel_name(self) -> str:
        return f"{self.name}-cancel"


def _lease_timeout(seconds: float) -> Any:
    """Dask's lease timeout set for the block: a semaphore reads it when it registers (how
    soon a dead holder's leases come back) and when a handle is made (it renews its leases
    at a fifth of it; Dask's default, 30 s, would let shorter leases run out)."""
    import dask

    return dask.config.set({"distributed.scheduler.locks.lease-timeout": f"{seconds}s"})


async def _semaphore(name: str, max_leases: int, lease_timeout: float) -> Any:
    """A shard's handle on one of the call's semaphores (made by :func:`_shared_limits`)."""
    # Set only while the handle is made: the await is outside, where other tasks of this
    # worker run.
    with _lease_timeout(lease_timeout):
        semaphore = _distributed().Semaphore(max_leases=max_leases, name=name)
    await semaphore
    return semaphore


@dataclass
class _Call:
    """One call's shards on the cluster: their futures, and whether the caller stopped them
    (Ctrl-C) rather than saw them end."""

    futures: list = field(default_factory=list)
    stopped: bool = False


@contextmanager
def _shared_limits(client: Any, limits: ClusterLimits) -> Iterator[_Call]:
    """Make the call's semaphores on the scheduler, with their lease timeouts (a killed
    worker's leases come back after them), and remove them and the call's events when its
    shards have ended. Stopped by the caller, they stay: a shard that has not yet seen the
    stop (Dask's cancel does not end a running task) must still find it set, and the
    stopped shards' in-flight leases run out after the lease."""
    distributed = _distributed()
    semaphores = []
    for name, size, lease_timeout in limits.semaphores():
        with _lease_timeout(lease_timeout):
            semaphore = distributed.Semaphore(max_leases=size, name=name,
                                              scheduler_rpc=client.scheduler, loop=client.loop)
            semaphore.register()
        semaphores.append(semaphore)
    call = _Call()
    try:
        yield call
    finally:
        if not call.stopped and all(future.done() for future in call.futures):
            semaphores[0].close()
            # The last window's per-minute leases come back a window after their
            # requests: that semaphore goes once they have.
            for semaphore in semaphores[1:]:
                asyncio.run_coroutine_threadsafe(
                    _close_later(client, semaphore.name, limits.window_seconds + 5),
                    client.loop.asyncio_loop)
            for name in (limits.stop_name, limits.cancel_name):
                distributed.Event(name, client=client).clear()  # an unset event is gone


async def _close_later(client: Any, name: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    try:
        await client.scheduler.semaphore_close(name=name)
    except Exception:  # noqa: BLE001 - the client or scheduler closed meanwhile: gone anyway
        pass


class ClusterBackend:
    """A backend that holds the cluster's limits around the real one, on a worker.

    Before each request (in ``ready``, so waiting does not count against the request's
    timeout): the cluster's stop, the backend's own ``ready`` (its client-side limits), a
    lease of the requests-per-minute budget (returned a minute later) and a lease of the
    in-flight cap (returned when the answer is in). A quota-exhausted answer sets the stop
    for every worker; the others then raise the same error before sending, and their runs
    stop as a quota stop does.

    Args:
        inner: the real backend.
        limits: the names and sizes of the shared limits.
    """

    def __init__(self, inner: AugmentationBackend, limits: ClusterLimits) -> None:
        self.inner, self.limits = inner, limits
        self.name = getattr(inner, "name", "custom")
        self.requires_network = getattr(inner, "requires_network", True)
        self.pricing = getattr(inner, "pricing", None)
        self._inner_ready = getattr(inner, "ready", None)
        self._in_flight = self._rate = self._stop = None
        self._stopped = False
        # After Ctrl-C, leases are kept, not returned: another worker, not yet told to stop,
        # cannot then send in their place (they die with this call's semaphore).
        self._keep_leases = False
        self._held: dict[int, int] = defaultdict(int)  # in-flight leases by request
        self._watch: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"ClusterBackend({self.inner!r}, {self.limits.name!r})"

    def __getattr__(self, name: str) -> Any:
        # What the engine, plan and pricing ask of a backend beyond the protocol
        # (prompt_overhead_characters, check_ready...) is the real backend's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def open(self) -> ClusterBackend:
        """Find the shared limits on the scheduler and start watching for the stop."""
        distributed = _distributed()
        limits = self.limits
        handles = [await _semaphore(*spec) for spec in limits.semaphores()]
        self._in_flight, *rate = handles
        self._rate = rate[0] if rate else None
        self._stop = distributed.Event(limits.stop_name)
        self._stopped = await self._stop.is_set()
        self._watch = asyncio.create_task(self._wait_for_stop())
        return self

    @property
    def stopped(self) -> bool:
        """Whether a worker of this call ran out of quota."""
        return self._stopped

    async def _wait_for_stop(self) -> None:
        # Polled, not Event.wait(): a wait cancelled at the end of the shard is logged as
        # an error on the scheduler.
        while not self._stopped:
            await asyncio.sleep(STOP_POLL_SECONDS)
            self._stopped = self._stopped or await self._stop.is_set()

    def _check_stop(self, request: AugmentationRequest) -> None:
        if self._stopped:
            raise QuotaExceededError(
                "the quota is used up: the service said so to another worker of this "
                "cluster run, so nothing more is sent", conversation_id=request.conversation_id,
                status_code=429)

    async def ready(self, request: AugmentationRequest) -> None:
        self._check_stop(request)
        if self._inner_ready is not None:
            await self._inner_ready(request)
        if self._rate is not None:
            await self._rate.acquire()
            # Returned a minute later: at most the budget in any minute, cluster-wide.
            asyncio.get_running_loop().call_later(self.limits.window_seconds, self._later,
                                                  self._rate.release)
        await self._in_flight.acquire()
        self._held[id(request)] += 1
        if self._stopped:
            self._return(request)
            self._check_stop(request)

    async def augment(self, request: AugmentationRequest) -> Extraction:
        if not self._held.get(id(request)):  # a backend the engine asks no ready() of
            await self.ready(request)
        try:
            self._check_stop(request)
            return await self.inner.augment(request)
        except QuotaExceededError:
            self._stopped = True
            await self._stop.set()
            raise
        finally:
            self._return(request)

    def keep_leases(self) -> None:
        """The caller said stop: return no in-flight lease from now on."""
        self._keep_leases = True

    def stop_renewing(self) -> None:
        """The shard is over: its semaphore handles stop renewing what they hold, so leases
        kept after Ctrl-C run out after the lease (per-minute ones are given back a window
        after their requests, as always)."""
        for semaphore in (self._in_flight, self._rate):
            if semaphore is not None:
                semaphore.refresh_leases = False
                refresh = getattr(semaphore, "refresh_callback", None)
                if refresh is not None:
                    refresh.stop()

    def _return(self, request: AugmentationRequest) -> None:
        """Give back this request's in-flight lease (without waiting for the scheduler)."""
        if self._held.get(id(request)):
            self._held[id(request)] -= 1
            if not self._held[id(request)]:
                del self._held[id(request)]
            if not self._keep_leases:
                self._later(self._in_flight.release)

    def _later(self, release: Any) -> None:
        task = asyncio.ensure_future(release())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Give back leases a cancelled run left (unless told to keep them), stop renewing
        and watching, close the real backend."""
        for count in list(self._held.values()):
            for _ in range(count if not self._keep_leases else 0):
                self._later(self._in_flight.release)
        self._held.clear()
        self.stop_renewing()
        if self._watch is not None:
            self._watch.cancel()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self.inner.aclose()


# --- progress ------------------------------------------------------------------------------

_COUNTED = [f.name for f in fields(SeedCounters)
            if f.name not in ("total", "window", "stopped_reason")]


class _ShardReporter:
    """The engine's progress sink on a worker: sends the shard's counts to the notebook
    every :data:`REPORT_SECONDS` (and at the end) through a ``distributed.Queue``."""

    def __init__(self, queue: Any, shard: int, attempt: str) -> None:
        self.queue, self.shard, self.attempt = queue, shard, attempt
        # Counts of the shard's earlier runs in this call (a retry after the lease).
        self.before: dict[str, Any] = {}
        self._sent = 0.0
        self._tasks: set[asyncio.Task] = set()

    def start(self, counters: SeedCounters) -> None:
        self._send(counters)

    def update(self, counters: SeedCounters, result: ConversationResult) -> None:
        if time.monotonic() - self._sent >= REPORT_SECONDS:
            self._send(counters)

    def close(self, counters: SeedCounters) -> None:
        self._send(counters)

    def _send(self, counters: SeedCounters) -> None:
        self._sent = time.monotonic()
        counts = {name: _plus(self.before.get(name), getattr(counters, name))
                  for name in _COUNTED}
        task = asyncio.ensure_future(self.queue.put((self.shard, self.attempt, counts)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _plus(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class _ClusterBar:
    """One tqdm bar (:class:`memori_nb.progress.TqdmProgress`) for every shard: each shard's
    latest counts, the newest attempt of a shard replacing a dead worker's."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress, self.total = progress, total
        self.latest: dict[int, tuple[str, dict]] = {}
        self.retired: set[str] = set()  # attempts a newer one replaced (a dead worker's)
        self.counters = SeedCounters(total=total)
        if progress is not None:
            progress.open(total)

    def report(self, shard: int, attempt: str, counts: dict) -> None:
        if attempt in self.retired:
            return
        earlier = self.latest.get(shard)
        if earlier is not None and earlier[0] != attempt:
            self.retired.add(earlier[0])
        self.latest[shard] = (attempt, counts)
        summed = SeedCounters(total=self.total)
        for _, shard_counts in self.latest.values():
            for name, value in shard_counts.items():
                setattr(summed, name, _plus(getattr(summed, name), value))
        self.counters = summed
        self._draw()

    def _draw(self) -> None:
        if self.progress is None or self.progress.bar is None:
            return
        from .progress import postfix_for

        bar = self.progress.bar
        bar.set_postfix(postfix_for(self.counters), refresh=False)
        bar.n = self.counters.processed
        bar.refresh()

    def close(self, counters: SeedCounters) -> None:
        self.counters = counters
        if self.progress is not None and self.progress.bar is not None:
            self.progress.bar.n = counters.processed
            self.progress.close(counters)


# --- one shard -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class _ShardSettings:
    """What every shard of one call shares (pickled into each task: neither the key nor
    the database URL, which may hold a password, in the clear)."""

    conn: Secret
    backend: Any
    api_key: Secret | None
    base_url: str | None
    backend_options: dict
    seed_config: SeedConfig | None
    lease_seconds: float
    force: bool
    limits: ClusterLimits | None = None
    # How a DataFrame or file is read (to_seeds' keywords: entity_col=, dayfirst=...).
    reading: dict = field(default_factory=dict)
    # When the backfill began (seed_distributed): forced, what its workers seeded since
    # is not sent again.
    backfill_started: datetime | None = None
    # Per-conversation results back from each shard (None: unless it streams files).
    keep_results: bool | None = None

    def __repr__(self) -> str:
        return (f"_ShardSettings(conn={hide_password(self.conn.reveal())!r}, "
                f"backend={self.backend!r}, api_key={self.api_key!r}, "
                f"limits={self.limits!r})")


_EMBEDDERS: dict[str, Any] = {}


def _shared_embedder() -> Any:
    """One embedding model per worker process, loaded once for all its shards."""
    if "default" not in _EMBEDDERS:
        from .embeddings import Embedder

        _EMBEDDERS["default"] = Embedder()
    return _EMBEDDERS["default"]


def _claims_for(settings: _ShardSettings) -> ClaimSettings:
    """This run's claims: a worker name unique to this process and run."""
    return ClaimSettings(worker=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
                         lease_seconds=settings.lease_seconds,
                         backfill_started=settings.backfill_started)


async def _seed_shard(seeds: Any, settings: _ShardSettings, *, backend: Any = None,
                      progress: Any = None, sleep: Any = asyncio.sleep
                      ) -> tuple[SeedResult, list[str]]:
    """Seed one shard into the shared store: one engine run, and one more for the
    conversations another worker held, after its lease ran out, until none is left.
    The shard's result and the ids of its runs.

    Files (a path or a list of paths) are streamed, never held whole, and their results
    stay in the store (the result has counts only, unless ``settings.keep_results``);
    anything else is read into memory and its results come back."""
    from .engine import seed_all
    from .stores import SqlStore

    paths = _paths(seeds)
    missing = [path for path in paths or () if not Path(path).exists()]
    if missing:
        raise InvalidInputError(
            f"{socket.gethostname()} cannot open {missing[0]!r}: each worker reads its "
            f"shard's files itself, so give paths every worker can open (a shared "
            f"filesystem), or read the source with memori_nb.to_seeds and pass the SeedData")
    streamed = paths is not None and all(Path(path).is_file() for path in paths)
    keep = not streamed if settings.keep_results is None else settings.keep_results
    if streamed:
        def read() -> Iterator[SeedData]:
            return _read_seeds(paths, settings.reading)
    else:  # in memory, or a folder to_seeds reads (an export)
        seeds = _read(seeds, settings.reading)

        def read() -> list[SeedData]:
            return seeds
    own_backend = backend is None
    if own_backend:
        backend = resolve_backend(
            settings.backend, api_key=settings.api_key.reveal() if settings.api_key else None,
            base_url=settings.base_url, **settings.backend_options)
    store = SqlStore(settings.conn.reveal(), embedder=_shared_embedder())
    results: list[SeedResult] = []
    try:
        todo = read()
        while True:
            result = await seed_all(todo, backend=backend, store=store,
                                    config=settings.seed_config, progress=progress,
                                    force=settings.force,
                                    keep_results=keep or isinstance(todo, list),
                                    claims=_claims_for(settings))
            results.append(result)
            held = ({(r.entity_id, r.conversation_id) for r in result.results
                     if r.reason == CLAIMED_ELSEWHERE} if result.results
                    else store.claimed_elsewhere(result.run_id))
            if not held or result.stopped_reason or getattr(backend, "stopped", False):
                break
            # Another worker holds these (a dead one's claims expire): try once its lease
            # has run out; a live worker will have seeded them by then, or renewed.
            if progress is not None:
                progress.before = _counts_without(progress.before, result, len(held))
            await sleep(settings.lease_seconds)
            todo = _only(read(), held)
    finally:
        store.close()
        if own_backend:
            await backend.aclose()
    return _combined(results), [r.run_id for r in results]


def _paths(source: Any) -> list[str] | None:
    """The paths a source names (a path, or a list of paths), or None for a source in
    memory."""
    if isinstance(source, (str, Path)):
        return [str(source)]
    if isinstance(source, (list, tuple)) and source and all(
            isinstance(item, (str, Path)) for item in source):
        return [str(item) for item in source]
    return None


def _only(seeds: Iterable[SeedData], wanted: set[tuple[str, str]]) -> list[SeedData]:
    """The conversations of ``seeds`` named in ``wanted`` (entity id, conversation id)."""
    from .models import Conversation
    from .validation import check_conversations

    kept = []
    for seed in seeds:
        # A streamed SeedData's conversations are read before the next SeedData.
        seed = replace(seed, conversations=list(seed.conversations))
        conversations = [seed.conversations[index]
                         for index, parsed in check_conversations(seed)
                         if isinstance(parsed, Conversation)
                         and (seed.entity_id, parsed.id) in wanted]
        if conversations:
            kept.append(replace(seed, conversations=conversations))
    return kept


def _counts_without(before: dict, result: SeedResult, held: int) -> dict:
    """The counts of a shard's finished runs, without the conversations to retry."""
    counts = dict(before)
    for name, value in (("processed", result.total - held), ("successful", result.successful),
                        ("failed", result.failed), ("skipped", result.skipped - held),
                        ("triples", result.total_triples),
                        ("chunked", result.chunked_conversations),
                        ("prompt_tokens", result.prompt_tokens),
                        ("completion_tokens", result.completion_tokens),
                        ("cost", result.cost)):
        counts[name] = _plus(counts.get(name), value)
    return counts


def _combined(runs: list[SeedResult]) -> SeedResult:
    """A shard's runs as one result: a retried conversation's later result replaces the
    'being seeded by another run' skip of the run before."""
    first = runs[0]
    if len(runs) == 1:
        return first
    duration_ms = sum(r.duration_ms for r in runs)
    if not first.results:  # counts only (files): each retried skip was counted again later
        retried = sum(r.claimed_elsewhere for r in runs[:-1])
        summed = _summed(runs, results=(), duration_ms=duration_ms)
        return replace(summed, total=summed.total - retried,
                       skipped=summed.skipped - retried,
                       claimed_elsewhere=runs[-1].claimed_elsewhere)
    results = list(first.results)
    where = {(r.entity_id, r.conversation_id): i for i, r in enumerate(results)}
    for run in runs[1:]:
        for r in run.results:
            results[where[r.entity_id, r.conversation_id]] = r
    return _summed(runs, results=tuple(results), duration_ms=duration_ms)


def _summed(runs: Sequence[SeedResult], *, results: tuple, duration_ms: float,
            cls: type = SeedResult, **extra: Any) -> SeedResult:
    """Totals counted from ``results`` when kept, the runs' own counts otherwise."""
    def total(name: str) -> Any:
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        return sum(values) if values else None

    stopped = next((r.stopped_reason for r in runs if r.stopped_reason), None)
    if results:
        statuses = [r.status for r in results]
        counts = dict(total=len(results), successful=statuses.count("succeeded"),
                      failed=statuses.count("failed"), skipped=statuses.count("skipped"),
                      total_triples=sum(r.triples_count for r in results),
                      claimed_elsewhere=sum(r.reason == CLAIMED_ELSEWHERE for r in results))
    else:
        counts = {name: total(name) or 0 for name in ("total", "successful", "failed",
                                                      "skipped", "total_triples",
                                                      "claimed_elsewhere")}
    return cls(run_id=runs[0].run_id, duration_ms=duration_ms, results=results,
               stopped_reason=stopped, chunked_conversations=total("chunked_conversations")
               or 0, prompt_tokens=total("prompt_tokens"),
               completion_tokens=total("completion_tokens"), cost=total("cost"),
               **counts, **extra)


async def _dask_shard(payload: bytes, settings: _ShardSettings, shard: int
                      ) -> tuple[SeedResult, list[str]]:
    """The task each Dask worker runs (on the worker's event loop): one shard under the
    cluster's limits, reporting to the notebook's bar. ``payload`` is the shard's SeedData,
    pickled once by the caller: Dask moves bytes without walking them again on the
    scheduler, where a graph of nested dicts is unpickled and pickled anew."""
    distributed = _distributed()
    seeds = pickle.loads(payload)
    inner = resolve_backend(
        settings.backend, api_key=settings.api_key.reveal() if settings.api_key else None,
        base_url=settings.base_url, **settings.backend_options)
    backend = await ClusterBackend(inner, settings.limits).open()
    reporter = _ShardReporter(distributed.Queue(settings.limits.progress_name), shard,
                              uuid.uuid4().hex)
    run = asyncio.ensure_future(_seed_shard(seeds, settings, backend=backend,
                                            progress=reporter))
    cancelled: list[bool] = []
    watch = asyncio.ensure_future(_cancel_when_told(
        distributed.Event(settings.limits.cancel_name), run, backend, cancelled))
    try:
        return await run
    except asyncio.CancelledError:
        if not cancelled:
            raise
        return None  # stopped as the caller asked; what finished is saved
    finally:
        # Dask's cancel may interrupt any await below: what must happen comes first.
        watch.cancel()
        backend.stop_renewing()
        try:
            await reporter.flush()
        finally:
            reporter.queue.close()
            await backend.aclose()


async def _cancel_when_told(event: Any, run: asyncio.Future, backend: ClusterBackend,
                            cancelled: list[bool]) -> None:
    """Cancel the shard's run once the caller says so (Ctrl-C in the notebook). Dask's own
    cancel does not stop a task that is running; the engine, cancelled, saves what finished
    and sends nothing more. Its in-flight leases are kept, so that the workers told later
    send no more in their place: what is lost is at most what was in flight."""
    while not run.done():
        await asyncio.sleep(STOP_POLL_SECONDS)
        if await event.is_set():
            cancelled.append(True)
            backend.keep_leases()
            run.cancel()
            return


def seed_shard(seeds: Any, *, conn: str, backend: str | AugmentationBackend = "memori",
               api_key: str | None = None, base_url: str | None = None,
               seed_config: SeedConfig | None = None, lease_seconds: float = 60.0,
               force: bool = False, keep_results: bool | None = None,
               **options: Any) -> SeedResult:
    """Seed one shard of a backfill into a shared SQL store, safely beside other processes.

    An ordinary engine run (one run in the store's ledger) that claims each conversation
    in the shared ledger before sending it: one another process holds is skipped, and
    tried again once that claim's lease has run out (a dead process's claims expire). The
    function :func:`seed_distributed` runs in each Dask worker, and the one to call from
    Ray Data (``map_batches``) or Spark (``mapInPandas``); there, limits hold per call.

    Args:
        seeds: what :func:`memori_nb.to_seeds` reads: SeedData or a list of them, a
            DataFrame (a pandas batch of rows), a file path or a list of paths.
        conn: a SQLAlchemy URL of the shared database (``postgresql+psycopg://...``); each
            process opens its own connection.
        backend, api_key, base_url: as for :class:`memori_nb.Memori`.
        **options: how a DataFrame or file is read, as :func:`memori_nb.to_seeds` takes it
            (``entity_col=``, ``conversation_col=``, ``entity_id=``, ``dayfirst=``...), and
            the ``openai`` backend's options (``model=``...).
        seed_config: limits, retries and ``batch_size`` (requests in flight in this call).
        lease_seconds: how long a claim holds without renewal (renewed while the run goes).
        force: send again what the ledger says was seeded.
        keep_results: each conversation's result in the returned SeedResult. By default
            yes, except for files, which are streamed: their results stay in the store and
            the result holds the counts and ``run_id``.

    Returns:
        The shard's :class:`SeedResult` (the run's, with a retry's results in place).

    Raises:
        ConfigurationError: ``conn`` is not a database URL; a bad backend setting.
        MissingApiKeyError: the ``memori`` backend has no key.
        StoreError: the database cannot be reached or written.
        RuntimeError: called where an event loop runs (a notebook cell): there, use
            :func:`seed_distributed`.

    Example::

        result = seed_shard(batch_frame, conn="postgresql+psycopg://app@db/memori",
                            backend="memori", api_key=key)
    """
    settings = _settings(conn=conn, backend=backend, api_key=api_key, base_url=base_url,
                         seed_config=seed_config, lease_seconds=lease_seconds, force=force,
                         options=options, keep_results=keep_results)
    return asyncio.run(_seed_shard(seeds, settings))[0]


# to_seeds' keywords besides the column names (``*_col``).
_READING = ("format", "entity_id", "dayfirst", "timestamp_format", "role_map")


def _settings(*, conn: Any, backend: Any, api_key: str | None, base_url: str | None,
              seed_config: SeedConfig | None, lease_seconds: float, force: bool,
              options: dict, limits: ClusterLimits | None = None,
              keep_results: bool | None = None) -> _ShardSettings:
    """Check the settings where the call is made, and wrap the key for the trip."""
    reading = {name: value for name, value in options.items()
               if name in _READING or name.endswith("_col")}
    backend_options = {name: value for name, value in options.items() if name not in reading}
    if not isinstance(conn, str) or not is_sql_conn(conn):
        raise ConfigurationError(
            f"conn must be the URL of a SQL database every worker can reach "
            f"(postgresql+psycopg://user@host/db), got {conn_for_display(conn)}: each worker "
            f"opens its own connection, and a connection object cannot travel to another "
            f"process")
    if not (isinstance(lease_seconds, (int, float)) and lease_seconds > 0):
        raise ConfigurationError(f"lease_seconds must be a positive number of seconds, got "
                                 f"{lease_seconds!r}")
    if isinstance(backend, str):
        here = resolve_backend(backend, api_key=api_key, base_url=base_url, **backend_options)
        # Checked before any worker starts: a missing key or bad option fails here.
        ensure_ready(here)
        # The key and URL as the backend read them here, where the call is made (from this
        # process's environment by default): a worker's environment may not have them.
        api_key = getattr(here, "_api_key", api_key)
        base_url = getattr(here, "base_url", base_url)
    elif api_key is not None or base_url is not None or backend_options:
        raise ConfigurationError("api_key, base_url and backend options go with a backend "
                                 "name; a backend object carries its own")
    return _ShardSettings(conn=Secret(conn), backend=backend,
                          api_key=Secret(api_key) if api_key else None, base_url=base_url,
                          backend_options=dict(backend_options), seed_config=seed_config,
                          lease_seconds=float(lease_seconds), force=force, limits=limits,
                          # A backfill on a cluster (seed_distributed) begins now.
                          backfill_started=datetime.now(timezone.utc) if limits else None,
                          reading=reading, keep_results=keep_results)


# --- the whole backfill --------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedSeedResult(SeedResult):
    """A :class:`SeedResult` summed over the shards of a :func:`seed_distributed` call.

    ``run_ids`` are the runs that returned (one per shard, more for a shard that waited for
    claims): ``Memori(conn=url).results(run_id)`` for each. A killed worker's runs are not
    among them (``m.runs()`` lists them, unfinished), and what it had finished counts here
    as skipped, already seeded. ``run_id`` is the first of them. ``shards`` holds each
    shard's own result.
    """

    run_ids: tuple[str, ...] = ()
    shards: tuple[SeedResult, ...] = field(default=(), repr=False)


def seed_distributed(source: Any, *, conn: str, client: Any = None, shards: int | None = None,
                     backend: str | AugmentationBackend = "memori", api_key: str | None = None,
                     base_url: str | None = None, seed_config: SeedConfig | None = None,
                     max_in_flight: int | None = None,
                     requests_per_minute: float | None = None, lease_seconds: float = 60.0,
                     force: bool = False, progress: Any = True,
                     keep_results: bool | None = None,
                     **options: Any) -> DistributedSeedResult:
    """Seed a backfill on a Dask cluster: shards of entities in Dask workers, into one
    shared SQL store, with limits that hold for the whole cluster.

    Each shard is an ordinary run in the store's ledger (:func:`seed_shard`). Workers claim
    conversations in the shared ledger before sending them, so none is sent twice at once;
    a worker killed mid-run loses nothing that finished, and Dask gives its shard to another
    worker, which sends again at most what was in flight. A re-run sends nothing seeded.

    Args:
        source: a folder of Parquet files or a list of file paths: each worker reads
            its shard's files itself (streamed; the files are spread over the shards by
            size), so a backfill larger than this machine's memory never passes through it;
            give paths every worker can open. Anything else :func:`memori_nb.to_seeds`
            reads (SeedData or a list of them, a DataFrame, one file) is read here and
            split by entity (an entity's conversations stay in one shard).
        conn: a SQLAlchemy URL every worker can reach: PostgreSQL
            (``postgresql+psycopg://user@host/db``); SQLite only with one worker.
        client: a ``distributed.Client``; None starts a ``LocalCluster`` of 2 worker
            processes (1 for SQLite) of 2 threads for this call and closes it after.
        shards: how many shards (default: 2 per worker, or one per worker thread if there
            are more threads; a worker runs its shards at once, on its event loop).
        backend, api_key, base_url: as for :class:`memori_nb.Memori`; the key and URL
            default to this process's environment, and the key travels to the workers
            masked (``***`` in every repr, log and dashboard). A backend object travels
            as it pickles, its key with it.
        **options: how the source is read, as :func:`memori_nb.to_seeds` takes it
            (``entity_col=``, ``entity_id=``, ``dayfirst=``...), and the ``openai``
            backend's options (``model=``...).
        seed_config: limits and retries; ``batch_size`` is the requests in flight per worker.
        max_in_flight: requests in flight across the cluster (default ``batch_size``).
        requests_per_minute: one budget for the whole cluster (not divided by workers).
        lease_seconds: how long a claim, or a dead worker's share of ``max_in_flight``,
            holds without renewal before it returns to the cluster.
        force: send again what the ledger says was seeded before this call; what a worker
            seeded during it (a shard redone after its worker died, a conversation another
            worker held) is not sent twice.
        progress: True for one tqdm bar for the cluster, False for none, or a
            :class:`memori_nb.TqdmProgress`.
        keep_results: every conversation's result in the returned one (``results``,
            ``to_frame()``), as a local run gives them. By default yes when the source is
            read here, no when the workers read files (a result per conversation of tens of
            millions would not fit here); True there brings them back, shard by shard.

    Returns:
        A :class:`DistributedSeedResult`: the shards' results summed, with the run ids.
        Its ``results`` are in input order when the source was read here, shard by shard
        (each in its files' order) when the workers read files. Without them, the rows are
        in the store: ``Memori(conn=url).results(run_id)`` for each of ``run_ids``. When one worker's quota ran out, every worker stopped:
        ``stopped_reason`` says so, and what was not sent is skipped, for the next run.

    Raises:
        ConfigurationError: Dask is not installed (``pip install 'memori_nb[dask]'``),
            ``conn`` is not a database URL, SQLite with several workers, a bad setting.
        MissingApiKeyError: the ``memori`` backend has no key (before any worker starts).
        StoreError: a worker could not reach or write the database (after the other
            shards ended).
        KeyboardInterrupt: Ctrl-C; every shard was told to stop and saved what finished
            (waited for up to 30 s; a second Ctrl-C stops waiting).

    Example::

        from distributed import Client
        from memori_nb.distributed import seed_distributed

        client = Client("tcp://scheduler:8786")
        result = seed_distributed("exports/", conn="postgresql+psycopg://app@db/memori",
                                  client=client, api_key=key, max_in_flight=64,
                                  requests_per_minute=3000)
        print(result)
    """
    distributed = _distributed()
    config = seed_config or SeedConfig()
    if max_in_flight is None:
        max_in_flight = config.batch_size
    if not (isinstance(max_in_flight, int) and max_in_flight > 0):
        raise ConfigurationError(f"max_in_flight must be a positive integer, got "
                                 f"{max_in_flight!r}")
    if requests_per_minute is not None and not (
            isinstance(requests_per_minute, (int, float)) and requests_per_minute >= 1):
        raise ConfigurationError(f"requests_per_minute must be a number of at least 1, got "
                                 f"{requests_per_minute!r}")
    limits = ClusterLimits(name=f"memori_nb-{uuid.uuid4().hex[:12]}",
                           max_in_flight=max_in_flight,
                           requests_per_minute=requests_per_minute,
                           lease_timeout=float(lease_seconds))
    settings = _settings(conn=conn, backend=backend, api_key=api_key, base_url=base_url,
                         seed_config=seed_config, lease_seconds=lease_seconds, force=force,
                         options=options, limits=limits, keep_results=keep_results)
    files = _files_for_workers(source)
    if files is not None:
        _check_readable(files, settings.reading)
    seeds = _read(source, settings.reading) if files is None else None
    sqlite = conn.lower().startswith("sqlite")
    own = client is None
    cluster = None
    if own:
        cluster = distributed.LocalCluster(n_workers=1 if sqlite else DEFAULT_WORKERS,
                                           processes=True,
                                           threads_per_worker=SHARDS_PER_WORKER,
                                           dashboard_address=":0")
        client = distributed.Client(cluster)
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
        workers = len(info) or 1
        threads = sum(worker.get("nthreads", 1) for worker in info.values())
        if sqlite and workers > 1:
            raise ConfigurationError(
                f"SQLite takes one writer at a time and lives on one machine: with "
                f"{workers} workers, use PostgreSQL (conn='postgresql+psycopg://...'), or a "
                f"client with one worker")
        # Shards run a thread each: as many as the threads, at least 2 per worker.
        count = shards or max(SHARDS_PER_WORKER * workers, threads)
        if not (isinstance(count, int) and count > 0):
            raise ConfigurationError(f"shards must be a positive integer, got {shards!r}")
        if files is not None:  # each worker reads its own files
            groups = split_by_size(files, count)
            outcomes, run_ids, seconds, bar = _run(
                client, [[files[i] for i in group] for group in groups], None, settings,
                progress)
            return _close_bar(bar, _summed(
                outcomes, results=tuple(r for outcome in outcomes for r in outcome.results),
                duration_ms=seconds * 1000, cls=DistributedSeedResult,
                run_ids=tuple(run_ids), shards=tuple(outcomes)))
        groups = split_by_entity(seeds, count)
        outcomes, run_ids, seconds, bar = _run(
            client, [[seeds[i] for i in group] for group in groups],
            sum(seed.size or 0 for seed in seeds), settings, progress)
        return _close_bar(bar, _cluster_result(seeds, groups, outcomes, run_ids, seconds))
    finally:
        if own:
            client.close()
            cluster.close()


def _files_for_workers(source: Any) -> list[str] | None:
    """The files of a folder (its Parquet files, in name order) or of a list of two or more
    paths, which the workers read themselves; None for anything read here."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        files = sorted(os.path.abspath(path) for path in Path(source).rglob("*.parquet"))
        if not files:
            raise InvalidInputError(f"the folder {str(source)!r} holds no .parquet files")
        return files
    paths = _paths(source)
    if paths is None or len(paths) < 2:
        return None
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise InvalidInputError(f"no such file: {missing[0]!r}")
    return [os.path.abspath(path) for path in paths]  # the same file from any worker


def _check_readable(files: Sequence[str], reading: dict) -> None:
    """Open each file as a worker will and read its first conversation, so that a file
    that is not what it seems, or options its format refuses, fail here, before any shard
    sends anything (not in one worker, after the others sent theirs).

    Raises:
        InvalidInputError: the file and what is wrong with it.
    """
    for path in files:
        seeds = _read_seeds(path, reading)
        try:
            first = next(seeds, None)
            if first is not None:
                next(iter(first.conversations), None)
        finally:
            seeds.close()


def split_by_size(files: Sequence[str], shards: int) -> list[list[int]]:
    """Indices of ``files`` per shard, the biggest files first onto the emptiest shard, so
    shards hold about as many bytes each (at most one shard per file).

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> paths = []
        >>> for name, size in (("a", 30), ("b", 20), ("c", 15)):
        ...     paths.append(os.path.join(folder, name))
        ...     with open(paths[-1], "wb") as f:
        ...         _ = f.write(b"x" * size)
        >>> split_by_size(paths, 2)
        [[0], [1, 2]]
    """
    sizes = [os.path.getsize(path) for path in files]
    return _balanced(range(len(files)), sizes.__getitem__, shards)


def _balanced(items: Iterable[Any], size_of: Any, shards: int) -> list[list[Any]]:
    """``items`` in at most ``shards`` groups of about equal total size: the biggest first,
    each onto the lightest group; each group in its items' order."""
    loads = [0] * shards
    groups: list[list[Any]] = [[] for _ in range(shards)]
    for item in sorted(items, key=lambda i: -size_of(i)):
        lightest = loads.index(min(loads))
        groups[lightest].append(item)
        loads[lightest] += size_of(item)
    return [sorted(group) for group in groups if group]


def _read(source: Any, reading: dict) -> list[SeedData]:
    """The whole source as SeedData with their conversations in lists (a file's readers
    stream them), to be counted and sent."""
    seeds = _read_seeds(source, reading)
    return [seed if isinstance(seed.conversations, (list, tuple))
            else replace(seed, conversations=list(seed.conversations)) for seed in seeds]


def _read_seeds(source: Any, reading: dict) -> Iterator[SeedData]:
    """The source's SeedData, one at a time (a file's as it streams them, a list's files
    one after another)."""
    from .sources import to_seeds

    paths = _paths(source)
    if paths is None:
        yield from to_seeds(source, **reading)
        return
    for path in paths:
        yield from to_seeds(path, **reading)


def split_by_entity(seeds: list[SeedData], shards: int) -> list[list[int]]:
    """Indices of ``seeds`` per shard: an entity's SeedData together, the biggest entities
    first onto the emptiest shard, so shards hold about as many conversations each.

    Example:
        >>> seeds = [SeedData.for_conversations(entity_id=e, conversations=[
        ...     {"id": f"{e}{i}", "messages": [{"role": "user", "content": "Hi"}]}
        ...     for i in range(n)]) for e, n in (("a", 3), ("b", 2), ("c", 2))]
        >>> split_by_entity(seeds, 2)
        [[0], [1, 2]]
    """
    by_entity: dict[str, list[int]] = defaultdict(list)
    for index, seed in enumerate(seeds):
        by_entity[seed.entity_id].append(index)
    sizes = {entity: sum(seeds[i].size or 0 for i in indices)
             for entity, indices in by_entity.items()}
    return [sorted(i for entity in group for i in by_entity[entity])
            for group in _balanced(by_entity, sizes.__getitem__, shards)]


def _run(client: Any, shards: list[list], total: int | None, settings: _ShardSettings,
         progress: Any) -> tuple[list[SeedResult], list[str], float, _ClusterBar]:
    """Submit the shards (each a list of SeedData, or of paths its worker reads), draw
    their progress; their results, their runs' ids, the seconds taken and the bar."""
    distributed = _distributed()
    from .progress import TqdmProgress

    started = time.perf_counter()
    if progress is True:
        progress = TqdmProgress("seeding (cluster)")
    bar = _ClusterBar(progress or None, total)
    queue = distributed.Queue(settings.limits.progress_name, client=client)
    with _shared_limits(client, settings.limits) as call:
        futures = call.futures
        futures += [client.submit(_dask_shard,
                                  pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL),
                                  settings, number,
                                  key=f"memori_nb-shard-{number}-{settings.limits.name}",
                                  pure=False)
                    for number, shard in enumerate(shards)]
        try:
            while not all(future.done() for future in futures):
                for shard, attempt, counts in queue.get(batch=True):
                    bar.report(shard, attempt, counts)
                time.sleep(REPORT_SECONDS)
        except BaseException:
            call.stopped = True
            _stop_shards(client, futures, settings.limits)
            raise
        finally:
            queue.close()
    errors = [f for f in futures if f.status == "error"]
    if errors:
        errors[0].result()  # raises the first shard's error, as the worker raised it
    gathered = client.gather(futures)
    return ([outcome for outcome, _ in gathered], [run for _, runs in gathered for run in runs],
            time.perf_counter() - started, bar)


def _close_bar(bar: _ClusterBar, result: DistributedSeedResult) -> DistributedSeedResult:
    """End the bar at the backfill's counts, with the line that sums it up under it."""
    counters = SeedCounters(total=bar.total, processed=result.total,
                            successful=result.successful, failed=result.failed,
                            skipped=result.skipped, triples=result.total_triples,
                            chunked=result.chunked_conversations,
                            prompt_tokens=result.prompt_tokens,
                            completion_tokens=result.completion_tokens, cost=result.cost,
                            stopped_reason=result.stopped_reason)
    counters.retries = bar.counters.retries
    bar.close(counters)
    note = getattr(bar.progress, "note", None)
    if note is not None:
        note(str(result), final=True)
    return result


def _stop_shards(client: Any, futures: list, limits: ClusterLimits) -> None:
    """Ctrl-C (or any error here): tell every shard to stop, and wait a little while they
    save what finished; a second Ctrl-C stops waiting."""
    distributed = _distributed()
    try:
        distributed.Event(limits.cancel_name, client=client).set()
        distributed.wait(futures, timeout=CANCEL_WAIT_SECONDS)
    except BaseException:  # noqa: BLE001 - a second Ctrl-C, or a timeout: stop waiting
        pass
    finally:
        client.cancel(futures)


def _cluster_result(seeds: list[SeedData], shards: list[list[int]],
                    outcomes: list[SeedResult], run_ids: list[str], seconds: float
                    ) -> DistributedSeedResult:
    """The shards' results as one, each conversation at its place in the input."""
    per_seed: dict[int, tuple] = {}
    for indices, outcome in zip(shards, outcomes):
        at = 0
        for index in indices:
            size = seeds[index].size or 0
            per_seed[index] = outcome.results[at:at + size]
            at += size
    results = tuple(r for index in sorted(per_seed) for r in per_seed[index])
    return _summed(outcomes, results=results, duration_ms=seconds * 1000,
                   cls=DistributedSeedResult, run_ids=tuple(run_ids), shards=tuple(outcomes))


__all__ = ["ClusterBackend", "ClusterLimits", "DistributedSeedResult", "INSTALL_HINT",
           "Secret", "seed_distributed", "seed_shard", "split_by_entity",
           "split_by_size"]
