"""Garbage-collector settings for bulk parsing and for seeding runs, restored exactly."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

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


# Allocations between young-generation collections while a run is active (Python's default
# is 700). A run keeps thousands of finished conversations pending for the next write, and
# the batch being written holds lists of a hundred thousand messages: each young collection
# rescans all of it. On 100,000 offline conversations that cost 2.0 s at 50,000 and at
# 200,000, and 0.01 s here. Acyclic garbage is freed at once whatever this is; only cyclic
# garbage (rare in a run) waits up to this many allocations.
RUN_YOUNG_THRESHOLD = 1_000_000
_runs_lock = threading.Lock()
_runs_active = 0
_saved_thresholds: tuple[int, ...] | None = None


@contextmanager
def fewer_young_collections() -> Iterator[None]:
    """Collect the young generation less often while at least one run is active.

    Local and exact: the first run to enter raises the threshold, the last one to leave
    restores the thresholds it found, unless someone changed them meanwhile (then theirs
    stay). Overlapping runs, in threads or event loops, share one change.
    """
    global _runs_active, _saved_thresholds
    with _runs_lock:
        if _runs_active == 0:
            _saved_thresholds = gc.get_threshold()
            if _saved_thresholds[0] != 0:  # 0: automatic collection is off; leave it so
                gc.set_threshold(max(_saved_thresholds[0], RUN_YOUNG_THRESHOLD),
                                 *_saved_thresholds[1:])
        _runs_active += 1
    try:
        yield
    finally:
        with _runs_lock:
            _runs_active -= 1
            if _runs_active == 0 and _saved_thresholds is not None:
                ours = ((max(_saved_thresholds[0], RUN_YOUNG_THRESHOLD) if _saved_thresholds[0]
                         else 0), *_saved_thresholds[1:])
                if gc.get_threshold() == ours:
                    gc.set_threshold(*_saved_thresholds)
                _saved_thresholds = None
