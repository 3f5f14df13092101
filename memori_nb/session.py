"""One place a seeding run is set up, started, stopped and torn down.

:class:`SeedSession` owns what every way of running shares: the backend (a name made into an
object, which the session then closes; an object passed in stays the caller's), whether it
can send (the API key), the store (opened only when first needed, so a run refused for a
missing key leaves no empty database file), the progress display (a bar by default in a
notebook or a terminal), stopping (:meth:`SeedSession.stop`, or Jupyter's Interrupt: finished
conversations are saved, the partial result is kept, and the Interrupt shows as one line),
resuming (a run after one that did not complete says what is left), closing (``with`` and
``async with``) and the words that describe a run. :class:`memori_nb.Memori` is a session
with Memori's seeding interface; the CLI, the notebook helpers and the panel bind to it.

Nothing here prints: lines for a person go to the progress display's ``note``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from .backends import AugmentationBackend, resolve_backend
from .backends.base import ensure_ready
from .engine import OnProgress, ProgressSink, seed_all
from .errors import ConfigurationError, RunInterrupted
from .models import INTERRUPTED, SeedConfig, SeedCounters, SeedData, SeedResult
from .stores import DEFAULT_DB, Store, open_store
from .wording import describe_seed_result

T = TypeVar("T")

# How often a waiting cell wakes up to notice a KeyboardInterrupt.
_JOIN_POLL_SECONDS = 0.1
# The message run_sync cancels with on a KeyboardInterrupt: an interrupt, not a cancel.
_INTERRUPT = "memori_nb: interrupted"


class SeedSession:
    """A store and a backend, and the runs between them.

    Args:
        conn: where memories go (anything :class:`memori_nb.Memori` takes).
        backend: a name (``"memori"``, ``"openai"``, ``"local"``) or a backend object.
        api_key, base_url, http_client, **backend_options: for the named backends, as
            :func:`memori_nb.backends.resolve_backend` takes them.
        embedder: what embeds facts for recall and Memori's tables.

    Raises:
        ConfigurationError: an unknown backend or a setting it does not take (before any
            database file is made).
    """

    def __init__(self, conn: Any = DEFAULT_DB, *,
                 backend: str | AugmentationBackend = "memori", api_key: str | None = None,
                 base_url: str | None = None, http_client: Any = None, embedder: Any = None,
                 **backend_options: Any) -> None:
        self.backend = resolve_backend(backend, api_key=api_key, base_url=base_url,
                                       http_client=http_client, **backend_options)
        # A backend made here is closed here; one passed in may serve other sessions.
        self._owns_backend = isinstance(backend, str)
        self._conn, self._embedder = conn, embedder
        self._store: Store | None = None
        # (loop, task, results once ended) of the run in progress: what stop() reaches for.
        self._running: tuple[asyncio.AbstractEventLoop, asyncio.Task, list] | None = None
        self._stop_requested = self._interrupted = False
        #: The last run's :class:`SeedResult`; after an interrupt, what it finished.
        self.last_result: SeedResult | None = None

    @property
    def store(self) -> Store:
        """The store, opened (and its file made) on first use."""
        if self._store is None:
            self._store = open_store(self._conn, embedder=self._embedder)
        return self._store

    # --- readiness ----------------------------------------------------------------------------

    def backend_ready(self, seed_config: SeedConfig | None = None) -> None:
        """Raise if the backend cannot send (with ``seed_config``'s window of requests).

        Raises:
            MissingApiKeyError: the ``memori`` backend has no API key.
            ConfigurationError: a malformed key or base URL; a ``batch_size`` over what the
                process's open-file limit allows.
        """
        ensure_ready(self.backend, (seed_config or SeedConfig()).batch_size)

    # --- running ------------------------------------------------------------------------------

    async def run(self, seeds: Iterable[SeedData], *, seed_config: SeedConfig | None = None,
                  progress: ProgressSink | OnProgress | bool | None = None,
                  force: bool = False, keep_results: bool = True) -> SeedResult:
        """Seed ``seeds`` (SeedData, one per entity) with this session's backend and store.

        Args:
            seeds: a list or any iterable of :class:`SeedData`.
            seed_config: limits, retries and concurrency.
            progress: None (the default) shows a bar in a notebook or a terminal; False none;
                True always; a progress display (``start``/``update``/``close``, and
                optionally ``note`` for the lines about the run); or a function
                ``f(processed, total, result)`` called after each conversation.
            force: send again conversations already seeded.
            keep_results: keep each conversation's result in the returned SeedResult.

        Returns:
            The :class:`SeedResult`. A run :meth:`stop` stopped returns what it finished
            (``stopped_reason="interrupted"``). Everything finished is saved, and running
            again continues.

        Raises:
            MissingApiKeyError: the backend has no key (nothing is sent, no file made).
            RunInterrupted: Jupyter's Interrupt stopped the run (one line in the notebook,
                no traceback; the partial result is its ``result`` and ``last_result``).
            RuntimeError: this session is already running.
            asyncio.CancelledError: the run was cancelled by other code (what finished is
                saved), or :meth:`stop` came before it began.
        """
        # Before the store opens: a refused run makes no database file.
        self.backend_ready(seed_config)
        if self._running is not None:
            raise RuntimeError("this session is already running a seed; stop() it first")
        loop, task, ended = asyncio.get_running_loop(), asyncio.current_task(), []
        self._running = token = (loop, task, ended)
        self._stop_requested = self._interrupted = False
        sink, on_progress = _progress_for(progress, seeds)
        try:
            with self._interrupts_noted(loop):
                if _can_note(sink):
                    resuming = await self._resume_note(seeds, seed_config, force)
                    if resuming:
                        sink.note(resuming, final=False)
                result = await seed_all(seeds, backend=self.backend, store=self.store,
                                        config=seed_config or SeedConfig(),
                                        on_progress=on_progress, progress=sink, force=force,
                                        keep_results=keep_results, on_end=ended.append)
        except asyncio.CancelledError as exc:
            interrupted = self._interrupted or _INTERRUPT in exc.args
            if not (interrupted or (self._stop_requested and ended)):
                raise  # someone else's cancellation (a timeout, a task group): theirs
            task.uncancel()
            self.last_result = partial = ended[0] if ended else None
            if interrupted:  # Jupyter's Interrupt: the rest of the cell stops too
                raise RunInterrupted(self.describe(partial) if partial else
                                     "Interrupted before anything was sent", partial) from None
            result = partial
        finally:
            if self._running is token:
                self._running = None
            if not ended and getattr(sink, "made_here", False):
                # The run never began (or never ended): close the bar made for it.
                sink.close(SeedCounters(stopped_reason="not begun"))
        self.last_result = result
        if _can_note(sink):
            sink.note(self.describe(result), final=True)
        return result

    def stop(self) -> bool:
        """Stop the run in progress (from any thread): nothing new is sent, what finished is
        saved, and :meth:`run` returns its partial result. Run again to continue.

        Returns:
            True if a run is stopping, False if none was running.
        """
        running = self._running
        if running is None:
            return False
        if not self._stop_requested:  # a second stop must not cut the first one's saving
            self._stop_requested = True
            running[0].call_soon_threadsafe(self._cancel_if_running, running)
        return True

    def _cancel_if_running(self, token: tuple) -> None:
        """On the run's loop: cancel it unless it has ended meanwhile (then the stop came
        too late, and must not cancel whatever its caller awaits next)."""
        loop, task, ended = token
        if self._running is token and not ended:
            task.cancel()

    @contextmanager
    def _interrupts_noted(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """While a run goes on a Jupyter kernel's own loop, note the Interrupt (SIGINT) that
        the kernel turns into cancelling the cell: so it is told from other cancellations.
        The previous handler is called as before, and put back afterwards."""
        if not (_in_kernel() and threading.current_thread() is threading.main_thread()):
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def noted(signum: int, frame: Any) -> None:
            self._interrupted = True
            loop.call_soon_threadsafe(_nothing)  # wake the loop: the cancel lands at once
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, noted)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def describe(self, result: SeedResult | None = None) -> str:
        """One line about a run (the last by default), e.g. ``"Seeded 3 conversations in
        0.2 s: 3 succeeded; 5 triples (run ab12)"``; an interrupted run says how to go on."""
        result = result or self.last_result
        return describe_result(result) if result is not None else "No run yet"

    async def _resume_note(self, seeds: Any, config: SeedConfig | None,
                           force: bool) -> str | None:
        """After a run that did not complete, what this one has left: "Resuming: 20 already
        seeded, 128 to send" (for a list of SeedData; a stream is not read twice). Planned
        off the event loop when the store allows it: a large list takes a while."""
        if force or not isinstance(seeds, (list, tuple)):
            return None
        if getattr(self.store, "threadsafe", True):
            return await asyncio.to_thread(self._left_after_unfinished, list(seeds), config)
        return self._left_after_unfinished(list(seeds), config)

    def _left_after_unfinished(self, seeds: list[SeedData],
                               config: SeedConfig | None) -> str | None:
        self.store.build()  # idempotent; the run would build it first anyway
        runs = self.store.runs()
        # Stopped, interrupted, failed, or its process died (a kernel restart, kill -9).
        if not len(runs) or runs["status"].iloc[0] == "completed":
            return None
        from .plan import plan

        left = plan(seeds, db=self.store, backend=self.backend, seed_config=config)
        if not left.already_seeded:
            return None  # nothing finished before: a fresh start, not a resumption
        return (f"Resuming: {left.already_seeded:,} already seeded, {left.to_send:,} to send"
                + (f", {left.invalid:,} invalid" if left.invalid else ""))

    # --- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the backend's HTTP client (if this session made the backend) and the store."""
        try:
            if self._owns_backend:
                await self.backend.aclose()
        finally:
            self.close()

    def close(self) -> None:
        """Close the store (the backend's client closes with the event loop that made it)."""
        if self._store is not None:
            self._store.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def run_sync(make_coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop.

    Outside an event loop this is ``asyncio.run``. Inside one (a Jupyter cell) the coroutine
    runs on a worker thread with its own loop; the calling thread waits, and a
    KeyboardInterrupt (the kernel's Interrupt) cancels the coroutine as an interrupt and waits
    for it to clean up; then the :class:`RunInterrupted` :meth:`SeedSession.run` raises, with
    what it finished, or else the KeyboardInterrupt, is raised. Pass a function that makes the
    coroutine, so that clients and locks are created inside the loop that uses them.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    outcome: dict[str, Any] = {}
    started = threading.Event()
    finished = threading.Event()

    def worker() -> None:
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(make_coroutine())
            outcome["loop"], outcome["task"] = loop, task
            started.set()
            outcome["result"] = loop.run_until_complete(task)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            started.set()
            loop.close()
            finished.set()

    thread = threading.Thread(target=worker, name="memori_nb-seed", daemon=True)
    thread.start()
    # Wait on an Event, not thread.join(timeout): before Python 3.13 a KeyboardInterrupt
    # inside join() can mark the live worker as stopped (bpo-45274), and the join after the
    # cancel then returns at once, before the run has saved what finished.
    try:
        while not finished.wait(_JOIN_POLL_SECONDS):
            pass
    except KeyboardInterrupt:
        started.wait()
        if "task" in outcome:
            outcome["loop"].call_soon_threadsafe(outcome["task"].cancel, _INTERRUPT)
        finished.wait()  # the engine saves what finished; this takes a moment, not the run
        if not isinstance(outcome.get("error"), RunInterrupted):
            raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _progress_for(progress: Any, seeds: Any) -> tuple[ProgressSink | None, OnProgress | None]:
    """The engine's (progress display, per-conversation callback) for ``progress``."""
    if progress is False:
        return None, None
    if progress is None and not _shows_bars():
        return None, None
    if progress is None or progress is True:
        return progress_bar(seeds), None
    if all(hasattr(progress, name) for name in ("start", "update", "close")):
        return progress, None
    if callable(progress):
        return None, progress
    raise ConfigurationError(f"progress must be True, False, a progress display (start, "
                             f"update, close) or a function f(processed, total, result); "
                             f"got {type(progress).__name__}")


def progress_bar(seeds: Any) -> Any:
    """A :class:`memori_nb.progress.TqdmProgress` over ``seeds``, opened now: call it on the
    thread running the cell (a notebook widget must be displayed from there), also when the
    run then goes on a worker thread."""
    from .progress import TqdmProgress

    bar = TqdmProgress("seeding")
    total = sum(s.size or 0 for s in seeds) if isinstance(seeds, (list, tuple)) else 0
    bar.open(total or None)
    bar.made_here = True  # closed by the session if the run fails before it begins
    return bar


def describe_result(result: SeedResult) -> str:
    """One line a person reads after a run (with its tokens and cost when the backend
    reported them), e.g. ``"Seeded 1 conversation in 0.2 s: 1 succeeded; 3 triples (run
    ab12)"`` or ``"Nothing to seed: all 37 conversations already seeded (run ab12)"``; an
    interrupted run says how to go on."""
    suffix = f" (run {result.run_id})"
    if result.stopped_reason != INTERRUPTED:
        return describe_seed_result(result, suffix=suffix)
    text = describe_seed_result(replace(result, stopped_reason=None), suffix=suffix)
    return (f"Interrupted: {text[0].lower()}{text[1:]}. Run again to continue: what finished "
            f"is skipped")


def _can_note(sink: Any) -> bool:
    return sink is not None and hasattr(sink, "note") and not getattr(sink, "disable", False)


def _nothing() -> None:
    """A callback that only wakes the event loop."""


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, whose Interrupt cancels the cell's task."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _shows_bars() -> bool:
    """Whether a progress bar helps here: in a notebook, or on a terminal."""
    if _in_kernel():
        return True
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()
