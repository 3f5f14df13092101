"""Garbage-collector settings for bulk parsing and for seeding runs, restored exactly."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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


# Allocations between young-generation collections while a run is active (Python's default
# is 700). A run keeps thousands of finished conversations pending for the next write, so
# at 700 the collector rescans them some 40 times per 1,000 conversations: a quarter of an
# offline run's time.
RUN_YOUNG_THRESHOLD = 50_000
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
