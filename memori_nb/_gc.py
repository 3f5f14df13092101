"""Garbage-collector pauses for bulk parsing."""

from __future__ import annotations

import gc
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
