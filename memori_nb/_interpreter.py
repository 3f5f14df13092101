"""Interpreter settings for bulk parsing and for seeding runs (the garbage collector, thread
switching), restored exactly."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic collector while parsing builds millions of acyclic objects.

    Parsed JSON has no reference cycles, so collections during the parse find nothing but
    rescan everything built so far (quadratic-ish time on big files).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def input_set_aside(build: Callable[[], T]) -> Iterator[T]:
    """Build a large input with the collector paused, and keep it out of the collector's
    sight while the block uses it; everything is as before afterwards.

    A million parsed messages would otherwise be rescanned by the first young collection
    after the parse and again as they age through the older generations (over a second
    for a 100 MB file). ``gc.freeze()`` sets them aside (nothing is collected among them
    meanwhile: parsed JSON has no cycles); ``gc.unfreeze()`` gives them back on exit. Left
    alone when something else froze objects already.
    """
    froze = False
    with paused_gc():
        value = build()
        if gc.get_freeze_count() == 0:
            gc.freeze()
            froze = True
    try:
        yield value
    finally:
        if froze:
            gc.unfreeze()


class _RunSetting:
    """An interpreter setting changed while at least one seeding run is active.

    Local and exact: the first run to enter changes it, the last one to leave restores what
    it found, unless someone changed it meanwhile (then theirs stays). Overlapping runs, in
    threads or event loops, share one change.
    """

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None],
                 during_runs: Callable[[Any], Any]) -> None:
        self._get, self._put, self._during_runs = get, put, during_runs
        self._lock = threading.Lock()
        self._active = 0
        self._found: Any = None
        self._ours: Any = None  # as read back (the switch interval is kept in microseconds)

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._found = self._get()
                self._put(self._during_runs(self._found))
                self._ours = self._get()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._get() == self._ours:
                    self._put(self._found)


# Allocations between young-generation collections while a run is active (Python's default
# is 700). A run keeps thousands of finished conversations pending for the next write, and
# the batch being written holds lists of a hundred thousand messages: each young collection
# rescans all of it. On 100,000 offline conversations that cost 2.0 s at 50,000 and at
# 200,000, and 0.01 s here. Acyclic garbage is freed at once whatever this is; only cyclic
# garbage (rare in a run) waits up to this many allocations.
RUN_YOUNG_THRESHOLD = 1_000_000
# How long a thread may run Python while another waits for the GIL, during a run (Python's
# default is 5 ms). The store's writer thread has DuckDB read each column of Python objects
# (message texts) 2,048 values at a time, taking the GIL for each; while the event loop's
# thread runs Python (a CPU-bound backend, validation) each take waited up to 5 ms, and a
# batch of 10,000 conversations took 2-3 s to write instead of 0.6. Only threads that are
# waiting notice: 100,000 offline conversations seeded 12-28% faster (three alternations).
RUN_SWITCH_SECONDS = 0.001

_young_collections = _RunSetting(
    gc.get_threshold, lambda thresholds: gc.set_threshold(*thresholds),
    # (a threshold of 0: automatic collection is off; left so)
    lambda found: (max(found[0], RUN_YOUNG_THRESHOLD), *found[1:]) if found[0] else found)
_switching = _RunSetting(sys.getswitchinterval, sys.setswitchinterval,
                         lambda found: min(found, RUN_SWITCH_SECONDS))


@contextmanager
def run_settings() -> Iterator[None]:
    """While at least one run is active: the young generation collected less often
    (``RUN_YOUNG_THRESHOLD``) and a waiting thread given the GIL sooner
    (``RUN_SWITCH_SECONDS``); both as they were once the last run ends."""
    with _young_collections.held(), _switching.held():
        yield
