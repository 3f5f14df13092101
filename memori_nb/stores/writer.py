"""The batching writer: finished conversations go to the store in batches, as they finish.

Every write has a fixed cost whatever its size, so results are gathered for a short while
(or until a batch is full) before one transaction writes them all.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait_futures

from dataclasses import replace

from ..errors import StoreError
from .base import ResultRecord, Store

# Finished results are written in batches of up to FLUSH_ROWS, or after FLUSH_SECONDS,
# whichever comes first; at MAX_PENDING_WRITES workers pause to let the store catch up.
FLUSH_ROWS = 10_000
# Short with a network backend: a result waiting here is lost (and billed again) if the
# process is killed, so it waits no longer than a write takes anyway.
FLUSH_SECONDS = 0.05
FLUSH_SECONDS_INLINE = 1.0
MAX_PENDING_WRITES = 20_000


class BatchWriter:
    """Batches finished conversations and writes them to the store.

    With a network backend the write runs on a worker thread, so requests keep flowing while
    DuckDB works. With a CPU-only backend it runs on the loop itself: there is no I/O to
    overlap, and a thread would only contend with the extraction for the GIL.
    """

    def __init__(self, store: Store, run_id: str, *, in_thread: bool) -> None:
        self._store, self._run_id, self._in_thread = store, run_id, in_thread
        # Finished conversations the store refused, as (record, the failed record stored).
        self.refused: list[tuple[ResultRecord, ResultRecord]] = []
        # Inline writes stall extraction, so they wait longer for a full batch.
        self._flush_seconds = FLUSH_SECONDS if in_thread else FLUSH_SECONDS_INLINE
        self._pending: list[ResultRecord] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._full = asyncio.Event()
        self._closing = False
        self._in_flight: tuple[list[ResultRecord], Future] | None = None
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
                try:
                    async with asyncio.timeout(self._flush_seconds):
                        await self._full.wait()
                except TimeoutError:
                    pass
            batch, self._pending = self._pending, []
            self._full.clear()
            self._room.set()
            if self._in_thread:
                # Kept so that a cancelled run can wait for the write it started.
                future = self._executor.submit(self.write, batch)
                self._in_flight = (batch, future)
                await asyncio.shield(asyncio.wrap_future(future))
                self._in_flight = None
            else:
                self.write(batch)
                await asyncio.sleep(0)  # let workers refill the next batch

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._full.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def flush_now(self) -> None:
        """Write what is pending, synchronously (used when the run is cancelled)."""
        if self._in_flight is not None:
            started, future = self._in_flight
            if future.cancel():  # never started: write its batch here
                self._pending = started + self._pending
            else:
                _wait_futures([future])  # the thread is writing it: let it finish
            self._in_flight = None
        batch, self._pending = self._pending, []
        self.write(batch)

    def write(self, batch: list[ResultRecord]) -> None:
        """Write a batch in transactions of at most the store's ``max_batch_rows``.

        A transaction the store refuses is written again one conversation at a time, so one
        bad record fails only itself: it is stored as failed, with the store's reason.

        Raises:
            StoreError: the store refuses even that (it cannot be written at all).
        """
        size = getattr(self._store, "max_batch_rows", None) or len(batch) or 1
        for start in range(0, len(batch), size):
            self._write_part(batch[start:start + size])

    def _write_part(self, part: list[ResultRecord]) -> None:
        try:
            self._store.write(self._run_id, part)
            return
        except StoreError as exc:
            if len(part) > 1:
                for record in part:
                    self._write_part([record])
                return
            failure = exc
        record = part[0]
        refused = ResultRecord(replace(record.result, status="failed", triples_count=0,
                                       error=f"finished, but the store refused it: {failure}"),
                               record.content_hash, record.process_id, None)
        self._store.write(self._run_id, [refused])  # if even this fails, the store is down
        self.refused.append((record, refused))
