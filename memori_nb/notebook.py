"""Notebook helpers: seed a DataFrame with live progress, get results back as DataFrames.

Everything here also works in a plain Python script or terminal. In a Jupyter kernel the event
loop is already running, so :func:`seed_dataframe` runs the seeding coroutine on a worker
thread with its own loop (no global patching of asyncio, see
:func:`memori_nb.session.run_sync`); interrupting the kernel stops the run there, which saves
every finished conversation and says so in one line (:class:`memori_nb.errors.RunInterrupted`,
whose ``results`` are what finished).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from .client import Memori
from .errors import RunInterrupted
from .models import SeedConfig, SeedData
from .session import progress_bar, run_sync
from .sources import to_seeds
from .stores import DEFAULT_DB


async def seed_dataframe_async(df: pd.DataFrame, *, db: Any = DEFAULT_DB, backend: Any = "memori",
                               seed_config: SeedConfig | None = None, batch_size: int | None = None,
                               force: bool = False, progress: bool = True,
                               api_key: str | None = None, base_url: str | None = None,
                               **columns: Any) -> pd.DataFrame:
    """The async twin of :func:`seed_dataframe`: ``await seed_dataframe_async(df, ...)``."""
    seeds = to_seeds(df, **columns)
    return await _seed(seeds, db=db, backend=backend, seed_config=seed_config,
                       batch_size=batch_size, force=force,
                       bar=progress_bar(seeds) if progress else False,
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
        progress: show the progress bar and the line about the run (False: quiet).
        api_key, base_url: for the ``memori`` backend (default: environment variables).
        **columns: column renames and ``entity_id=`` for :func:`memori_nb.from_dataframe`.

    Returns:
        The run's per-conversation results (``entity_id``, ``conversation_id``, ``status``,
        ``error``, ``triples_count``, ``chunks_processed``, ``duration_ms`` ...).

    Raises:
        InvalidInputError: the frame is unusable (missing columns ...).
        MissingApiKeyError: backend ``"memori"`` without a key; nothing was sent.
        RunInterrupted: the kernel's Interrupt stopped the run; it shows as one line, what
            finished is saved (its rows are the exception's ``results``), and calling again
            continues.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"entity_id": ["u1", "u1"], "conversation_id": ["c1", "c1"],
        ...                       "role": ["user", "assistant"],
        ...                       "content": ["I live in Oslo.", "Nice!"]})
        >>> seed_dataframe(frame, db=":memory:", backend="local", progress=False).status[0]
        'succeeded'
    """
    seeds = to_seeds(df, **columns)
    bar = progress_bar(seeds) if progress else False  # made here: widgets need this thread
    return run_sync(lambda: _seed(seeds, db=db, backend=backend, seed_config=seed_config,
                                  batch_size=batch_size, force=force, bar=bar,
                                  api_key=api_key, base_url=base_url))


async def _seed(seeds: list[SeedData], *, db, backend, seed_config, batch_size, force, bar,
                api_key, base_url) -> pd.DataFrame:
    async with Memori(conn=db, backend=backend, api_key=api_key, base_url=base_url) as memori:
        try:
            result = await memori.seed(seeds, seed_config=seed_config, batch_size=batch_size,
                                       force=force, progress=bar, keep_results=False)
        except RunInterrupted as stopped:
            if stopped.result is not None:  # what finished, for the cell that catches it
                stopped.results = memori.store.results(stopped.result.run_id)
            raise
        return memori.store.results(result.run_id)


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
