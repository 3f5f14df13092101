"""The batching writer: finished conversations go to the store in batches, as they finish.

Every write has a fixed cost whatever its size, so results are gathered for a short while
(or until a batch is full) before one transaction writes them all.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait_futures
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError
from .base import ResultRecord, Store

if TYPE_CHECKING:
    from .journal import Journal

# Finished results are written in batches of up to FLUSH_ROWS, or after FLUSH_SECONDS,
# whichever comes first; at MAX_PENDING_WRITES workers pause to let the store catch up.
# A result waiting here is safe: what a backend bills for is in the journal already. Each
# write costs tens of milliseconds whatever its size, so writes are a few seconds apart.
FLUSH_ROWS = 10_000
FLUSH_SECONDS = 3.0
# In a run's tail (nothing left to start) batches are gathered this briefly, so that the
# last write, which the run waits for, holds few results.
TAIL_FLUSH_SECONDS = 0.25
# How often a store with prepare() (see BatchWriter) is handed the results gathered since.
PREPARE_SECONDS = 0.1
# The journal is put on the disk itself this often (a killed process loses nothing anyway;
# this bounds what a machine crash or a disk turning read-only takes).
SYNC_SECONDS = 1.0
MAX_PENDING_WRITES = 20_000


class BatchWriter:
    """Batches finished conversations and writes them to the store.

    The write runs on a worker thread (``in_thread``), so requests or a CPU-only backend's
    extraction go on while the store works on the other core (DuckDB and the database drivers
    release the GIL while they execute). A store bound to one thread writes on the loop.

    A store with ``prepare(records)`` written on a thread gets the results as they gather, on
    that thread, to do ahead what their write will need (the SQL store embeds their new
    facts): the work is spread over the run instead of piling up in each write, and the last
    write, which the run waits for, has little left to do.
    """

    def __init__(self, store: Store, run_id: str, *, in_thread: bool,
                 journal: Journal | None = None) -> None:
        self._store, self._run_id, self._in_thread = store, run_id, in_thread
        # Its segments are deleted as the batches they hold are committed.
        self._journal = journal
        # Finished conversations the store refused, as (record, the failed record stored).
        self.refused: list[tuple[ResultRecord, ResultRecord]] = []
        self._pending: list[ResultRecord] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._full = asyncio.Event()
        self._closing = False
        self._gather_seconds = FLUSH_SECONDS
        self._in_flight: tuple[list[ResultRecord], Future] | None = None
        self._prepare = getattr(store, "prepare", None) if in_thread else None
        self._prepared = 0  # how many of the pending results prepare() has had
        self._preparing: Future | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memori_nb-write")

    def add(self, record: ResultRecord) -> None:
        self._pending.append(record)
        self._wake.set()
        if len(self._pending) >= FLUSH_ROWS:
            self._full.set()
        if len(self._pending) >= MAX_PENDING_WRITES:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._full.is_set():
                # Every write has a fixed cost, so gather a batch for a short while first.
                await self._gather()
            # Everything the old segment holds is in this batch or an earlier one. (Rotated
            # first: when that fails, the batch is still pending, for flush_now.)
            segment = self._journal.rotate() if self._journal else None
            batch, self._pending, self._prepared = self._pending, [], 0
            self._full.clear()
            self._room.set()
            if self._in_thread:
                # Kept so that a cancelled run can wait for the write it started.
                future = self._executor.submit(self.write, batch, segment)
                self._in_flight = (batch, future)
                await asyncio.shield(asyncio.wrap_future(future))
                self._in_flight = None
            else:
                self.write(batch, segment)
            if not self._in_thread:
                await asyncio.sleep(0)  # let workers refill the next batch

    async def _gather(self) -> None:
        """Wait up to FLUSH_SECONDS (TAIL_FLUSH_SECONDS in a run's tail) for a full batch,
        syncing the journal to the disk every SYNC_SECONDS meanwhile (on a thread: a sync can
        take a while on a busy disk), and handing the store what came to prepare every
        PREPARE_SECONDS."""
        loop = asyncio.get_running_loop()
        started = synced = loop.time()
        step = PREPARE_SECONDS if self._prepare else SYNC_SECONDS
        while (left := started + self._gather_seconds - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(step, left)):
                    await self._full.wait()
                return
            except TimeoutError:
                # (Half a step early counts: a timer may fire a hair before its time.)
                if self._journal is not None and loop.time() - synced >= SYNC_SECONDS - step / 2:
                    await asyncio.to_thread(self._journal.sync)
                    synced = loop.time()
                self._prepare_gathered()

    def _prepare_gathered(self) -> None:
        """Hand the store the results gathered since the last call, on the write's thread.
        Not awaited: a slow one holds up neither the syncs nor the gathering (the write waits
        for it on that thread). While one is busy, what comes goes with the next."""
        if (self._prepare is None or self._prepared == len(self._pending)
                or (self._preparing is not None and not self._preparing.done())):
            return
        records, self._prepared = self._pending[self._prepared:], len(self._pending)
        self._preparing = self._executor.submit(self._prepare_quietly, records)

    def _prepare_quietly(self, records: list[ResultRecord]) -> None:
        try:
            self._prepare(records)
        except Exception:  # noqa: BLE001 - their write does the same work and says what fails
            pass

    def hurry(self) -> None:
        """Gather batches only briefly from now on (the run's tail: the last write, which
        the run waits for, should hold few results)."""
        if self._gather_seconds != TAIL_FLUSH_SECONDS:
            self._gather_seconds = TAIL_FLUSH_SECONDS
            self._full.set()  # the batch gathering now is written at once

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._full.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def flush_now(self) -> None:
        """Write what is pending, synchronously (used when the run is cancelled)."""
        if self._preparing is not None:
            _wait_futures([self._preparing])  # one thread at a time on the store
        if self._in_flight is not None:
            started, future = self._in_flight
            if future.cancel():  # never started: write its batch here
                self._pending = started + self._pending
            else:
                _wait_futures([future])  # the thread is writing it: let it finish
                if future.exception() is not None:  # it failed: try it again with the rest
                    self._pending = started + self._pending
            self._in_flight = None
        batch, self._pending, self._prepared = self._pending, [], 0
        self.write(batch)

    def write(self, batch: list[ResultRecord], segment: Path | None = None) -> None:
        """Write a batch (see :func:`write_records`); what the store refused is kept in
        :attr:`refused`. Then the journal ``segment`` the batch emptied is deleted."""
        if self._journal is not None:
            self._journal.sync()  # off the event loop, like the write itself
        self.refused += write_records(self._store, self._run_id, batch)
        if segment is not None:
            self._journal.drop(segment)


def write_records(store: Store, run_id: str, records: list[ResultRecord]
                  ) -> list[tuple[ResultRecord, ResultRecord]]:
    """Write records in transactions of at most the store's ``max_batch_rows``.

    A transaction the store refuses is written again one conversation at a time, so one bad
    record fails only itself: it is stored as failed, with the store's reason.

    Returns:
        The records the store refused, each with the failed record stored instead.

    Raises:
        StoreError: the store cannot be written at all (disk full, read-only, gone): the
            first refusal, which names the cause.
    """
    refused: list[tuple[ResultRecord, ResultRecord]] = []
    size = getattr(store, "max_batch_rows", None) or len(records) or 1
    for start in range(0, len(records), size):
        part = records[start:start + size]
        try:
            store.write(run_id, part)
        except StoreError as exc:
            if storage_failed(exc):
                raise
            refused += _one_by_one(store, run_id, part, exc)
    return refused


def _one_by_one(store: Store, run_id: str, part: list[ResultRecord], batch_error: StoreError
                ) -> list[tuple[ResultRecord, ResultRecord]]:
    refused = []
    for record in part:
        failure = batch_error
        if len(part) > 1:
            try:
                store.write(run_id, [record])
                continue
            except StoreError as exc:
                failure = exc
        stored = ResultRecord(replace(record.result, status="failed", triples_count=0,
                                      error=f"finished, but the store refused it: {failure}",
                                      reason="finished, but the store refused it"),
                              record.content_hash, record.process_id, None)
        try:
            store.write(run_id, [stored])
        except StoreError:
            raise batch_error from None  # not even a failure row: the store is down
        refused.append((record, stored))
    return refused


# What databases say when the disk, not the record, is the problem.
_STORAGE_FAILURES = ("no space left", "read-only file system", "disk i/o error",
                     "database or disk is full", "disk quota exceeded",
                     "input/output error", "file too large", "readonly database",
                     # DuckDB past its memory_limit: written one by one, the batch would
                     # only crawl (each single write scans whole tables) and fail again.
                     "out of memory error")


def storage_failed(exc: BaseException) -> bool:
    """True when a store's error says it cannot write at all, whatever the record."""
    text = str(exc).lower()
    return any(failure in text for failure in _STORAGE_FAILURES)
