"""The batching writer: finished conversations go to the store in batches, as they finish.

Every write has a fixed cost whatever its size, so results are gathered for a short while
(or until a batch is full) before one transaction writes them all.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait_futures

from .base import ResultRecord, Store

# Finished results are written in batches of up to FLUSH_ROWS, or after FLUSH_SECONDS,
# whichever comes first; at MAX_PENDING_WRITES workers pause to let the store catch up.
FLUSH_ROWS = 10_000
FLUSH_SECONDS = 0.2
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
                future = self._executor.submit(self._store.write, self._run_id, batch)
                self._in_flight = (batch, future)
                await asyncio.shield(asyncio.wrap_future(future))
                self._in_flight = None
            else:
                self._store.write(self._run_id, batch)
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
        self._store.write(self._run_id, batch)
