"""Notebook helpers: seed a DataFrame with live progress, get results back as DataFrames.

Everything here also works in a plain Python script or terminal. In a Jupyter kernel the event
loop is already running, so :func:`seed_dataframe` runs the seeding coroutine on a worker
thread with its own loop (no global patching of asyncio); interrupting the kernel cancels the
run there, which saves every finished conversation before returning.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pandas as pd

from .client import Memori
from .sources import to_seeds
from .models import SeedConfig, SeedData, SeedResult
from .progress import TqdmProgress
from .wording import describe_seed_result
from .stores import DEFAULT_DB

T = TypeVar("T")

# How often the waiting cell wakes up to notice a KeyboardInterrupt.
_JOIN_POLL_SECONDS = 0.1


def run_sync(make_coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop.

    Outside an event loop this is ``asyncio.run``. Inside one (a Jupyter cell) the coroutine
    runs on a worker thread with its own loop; the calling thread waits, and a
    KeyboardInterrupt (the kernel's Interrupt) cancels the coroutine, waits for it to clean
    up, and is raised again. Pass a function that makes the coroutine, so that clients and
    locks are created inside the loop that uses them.
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
            outcome["loop"].call_soon_threadsafe(outcome["task"].cancel)
        finished.wait()  # the engine saves what finished; this takes a moment, not the run
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def seed_dataframe_async(df: pd.DataFrame, *, db: Any = DEFAULT_DB, backend: Any = "memori",
                               seed_config: SeedConfig | None = None, batch_size: int | None = None,
                               force: bool = False, progress: bool = True,
                               api_key: str | None = None, base_url: str | None = None,
                               **columns: Any) -> pd.DataFrame:
    """The async twin of :func:`seed_dataframe`: ``await seed_dataframe_async(df, ...)``."""
    seeds = to_seeds(df, **columns)
    return await _seed(seeds, db=db, backend=backend, seed_config=seed_config,
                       batch_size=batch_size, force=force,
                       bar=_progress_bar(seeds) if progress else None,
                       api_key=api_key, base_url=base_url)


def seed_dataframe(df: pd.DataFrame, *, db: Any = DEFAULT_DB,
                   backend: Any = "memori", seed_config: SeedConfig | None = None,
                   batch_size: int | None = None, force: bool = False, progress: bool = True,
                   api_key: str | None = None, base_url: str | None = None,
                   **columns: Any) -> pd.DataFrame:
    """Seed every entity in a DataFrame and return one row per conversation.

    Works when called plainly in a notebook cell (no ``await`` needed) and in scripts.
    Shows a progress bar (a widget in Jupyter, a console bar elsewhere) with live counts of
    succeeded, failed, skipped, retries and triples. Conversations already seeded with the
    same content in this database are skipped (use ``force=True`` to send them again).

    Args:
        df: long format (one row per message) or nested (one row per conversation with a
            ``messages`` list); see :func:`memori_nb.from_dataframe`.
        db: DuckDB file path, ``":memory:"`` or an open connection (results, facts and
            triples are stored there for SQL), or anything ``Memori(conn=...)`` takes for
            Memori's own tables (a SQLAlchemy URL, Engine or sessionmaker, a DB-API
            connection).
        backend: ``"memori"`` (needs ``MEMORI_API_KEY``), ``"local"`` (offline) or an object.
        seed_config: limits and retries; ``batch_size`` overrides its concurrency.
        force: send again conversations already seeded.
        progress: show the progress bar.
        api_key, base_url: for the ``memori`` backend (default: environment variables).
        **columns: column renames and ``entity_id=`` for :func:`memori_nb.from_dataframe`.

    Returns:
        The run's per-conversation results (``entity_id``, ``conversation_id``, ``status``,
        ``error``, ``triples_count``, ``chunks_processed``, ``duration_ms`` ...).

    Raises:
        InvalidInputError: the frame is unusable (missing columns ...).
        MissingApiKeyError: backend ``"memori"`` without a key; nothing was sent.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"entity_id": ["u1", "u1"], "conversation_id": ["c1", "c1"],
        ...                       "role": ["user", "assistant"],
        ...                       "content": ["I live in Oslo.", "Nice!"]})
        >>> seed_dataframe(frame, db=":memory:", backend="local", progress=False).status[0]
        'succeeded'
    """
    seeds = to_seeds(df, **columns)
    bar = _progress_bar(seeds) if progress else None  # made here: widgets need this thread
    return run_sync(lambda: _seed(seeds, db=db, backend=backend, seed_config=seed_config,
                                  batch_size=batch_size, force=force, bar=bar,
                                  api_key=api_key, base_url=base_url))


async def _seed(seeds: list[SeedData], *, db, backend, seed_config, batch_size, force, bar,
                api_key, base_url) -> pd.DataFrame:
    config = seed_config or SeedConfig()
    if batch_size is not None:
        config = SeedConfig(**{**_fields(config), "batch_size": batch_size})
    memori = Memori(conn=db, backend=backend, api_key=api_key, base_url=base_url)
    try:
        result = await memori.seed(seeds, seed_config=config, force=force, progress=bar,
                                   keep_results=False)
        print(describe_result(result))
        return memori.store.results(result.run_id)
    finally:
        await memori.backend.aclose()
        memori.close()


def describe_result(result: SeedResult) -> str:
    """One line a person reads after a run (with its tokens and cost when the backend
    reported them), e.g. ``"Seeded 1 conversation in 0.2 s: 1 succeeded; 3 triples (run
    ab12)"`` or ``"Nothing to seed: all 37 conversations already seeded (run ab12)"``."""
    return describe_seed_result(result, suffix=f" (run {result.run_id})")


def _progress_bar(seeds: list[SeedData]) -> TqdmProgress:
    bar = TqdmProgress("seeding")
    bar.open(sum(seed.size or 0 for seed in seeds) or None)
    return bar


def _fields(config: SeedConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


@contextmanager
def _reading(db) -> Iterator[Memori]:
    """A Memori on ``db`` for queries only (no backend is used), closed afterwards."""
    m = Memori(conn=db, backend="local")
    try:
        m.config.storage.build()
        yield m
    finally:
        m.close()


def _query(db, method: str, *args: Any) -> pd.DataFrame:
    with _reading(db) as m:
        return getattr(m.store, method)(*args)


def results(db: Any = DEFAULT_DB, run_id: str | None = None) -> pd.DataFrame:
    """Per-conversation results of a run (the latest by default)."""
    return _query(db, "results", run_id)


def failures(db: Any = DEFAULT_DB, run_id: str | None = None) -> pd.DataFrame:
    """Failed conversations of a run (the latest by default), with their errors."""
    return _query(db, "failures", run_id)


def facts(db: Any = DEFAULT_DB, entity_id: str | None = None) -> pd.DataFrame:
    """Deduplicated facts with mention counts (all entities, or one)."""
    return _query(db, "facts", entity_id)


def sources(fact_or_query: str, *, db: Any = DEFAULT_DB, entity_id: str | None = None,
            limit: int = 5) -> pd.DataFrame:
    """Facts beside the messages they came from: ``fact_or_query`` is a stored fact, or a
    question whose ``limit`` recalled facts are shown (see :meth:`Memori.sources`)."""
    with _reading(db) as m:
        return m.sources(fact_or_query, entity_id=entity_id, limit=limit)


def triples(db: Any = DEFAULT_DB, entity_id: str | None = None) -> pd.DataFrame:
    """Extracted triples, one row per time a conversation produced one."""
    return _query(db, "triples", entity_id)


def entity_summaries(db: Any = DEFAULT_DB) -> pd.DataFrame:
    """One row per entity: conversations seeded, facts, triples, first and last seen."""
    return _query(db, "entity_summaries")


def runs(db: Any = DEFAULT_DB) -> pd.DataFrame:
    """Every run, newest first, with its totals and status (and its tokens and cost, for a
    backend that bills by token)."""
    return _query(db, "runs")



def recall(query: str, *, db: Any = DEFAULT_DB, entity_id: str | None = None,
           limit: int = 5) -> pd.DataFrame:
    """The facts most relevant to ``query`` for an entity, best first, as Memori's recall
    ranks them (see :meth:`memori_nb.Memori.recall`), one row per fact.

    Args:
        query: a question or phrase, e.g. ``"where does the user live?"``.
        db: the store, as for :func:`facts` (a DuckDB file, or Memori's SQL tables).
        entity_id: whose facts; defaults to the store's only entity.
        limit: how many facts at most.

    Returns:
        Columns ``content``, ``score``, ``similarity``, ``conversations`` (ids of the
        conversations that stated the fact), ``first_seen``, ``last_seen``,
        ``date_last_time``, ``entity_id``, ``id``.

    Raises:
        ConfigurationError: no ``entity_id`` and not exactly one entity in the store; the
            embedding model is not installed (``pip install 'memori_nb[recall]'``).

    Example::

        recall("what pet does the user have?", db="memori.duckdb", entity_id="user-ana")
    """
    with _reading(db) as m:
        rows = m.recall(query, limit, entity_id=entity_id)
    return pd.DataFrame(rows, columns=["content", "score", "similarity", "conversations",
                                       "first_seen", "last_seen", "date_last_time",
                                       "entity_id", "id"])
