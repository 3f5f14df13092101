"""``Memori``: the seeding API, compatible with the Memori seeding interface."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import httpx

from .backends import AugmentationBackend
from .engine import OnProgress, ProgressSink
from .errors import ConfigurationError
from .models import SeedConfig, SeedData, SeedResult, stored_id
from .plan import Plan, plan
from .sources import to_seeds
from .validation import options_for
from .session import SeedSession
from .stores import DEFAULT_DB, Store
from .stores.connection import conn_for_display


class StorageConfig:
    """``m.config.storage``: the store behind a :class:`Memori`."""

    def __init__(self, session: SeedSession) -> None:
        self._session = session

    @property
    def store(self) -> Store:
        return self._session.store

    def build(self) -> None:
        """Create the store's tables if they do not exist (idempotent): memori_nb's DuckDB
        tables, or Memori's schema and memori_nb's ledger in a SQL database."""
        self.store.build()


class MemoriConfig:
    """``m.config``: holds ``storage``."""

    def __init__(self, session: SeedSession) -> None:
        self.storage = StorageConfig(session)


class Memori(SeedSession):
    """Seed historical conversations into a memory store.

    Args:
        conn: where memories go. A DuckDB file path (default ``"memori.duckdb"``),
            ``":memory:"`` or ``duckdb`` connection: the embedded DuckDB store, for analysis.
            A SQLAlchemy ``sessionmaker``, ``Session``, ``Engine`` or URL
            (``"sqlite:///memori.db"``, ``"postgresql+psycopg://..."``), a DB-API connection
            (``sqlite3``, psycopg) or a function returning one: Memori's own tables there,
            which an app's Memori SDK recalls from (needs ``pip install 'memori_nb[memori]'``).
        backend: ``"memori"`` (default: the AA service, needs ``MEMORI_API_KEY``),
            ``"openai"`` (your own chat model on any OpenAI-compatible server: OpenAI, vLLM,
            Ollama, llama.cpp), ``"local"`` (offline extractor, no key), or a backend object.
        api_key: the service's API key; defaults to ``$MEMORI_API_KEY`` (``memori``) or
            ``$OPENAI_API_KEY`` (``openai``, where local servers need none). Never printed.
        base_url: the service URL; defaults to ``$MEMORI_API_URL_BASE`` (``memori``) or
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1`` (``openai``).
        http_client: an ``httpx.AsyncClient`` for the HTTP backends (tests inject one).
        **backend_options: for ``backend="openai"``: ``model`` (default ``$OPENAI_MODEL``),
            ``temperature`` (0.0), ``max_tokens`` (2048), ``headers`` (extra request
            headers), ``requests_per_minute`` and ``tokens_per_minute`` (client-side limits),
            ``prompt_price`` and ``completion_price`` (USD per million tokens, for the cost).
            See :class:`memori_nb.backends.openai.OpenAIBackend`.
        embedder: what embeds facts for Memori's tables and for recall (default: the
            bundled all-MiniLM-L6-v2, :class:`memori_nb.embeddings.Embedder`).

    Example:
        >>> import asyncio
        >>> m = Memori(conn=":memory:", backend="local")
        >>> data = SeedData.for_conversations(entity_id="user-1", conversations=[
        ...     {"id": "c1", "messages": [{"role": "user", "content": "I live in Lisbon."}]}])
        >>> asyncio.run(m.seed(data)).successful
        1

        With your own model (a local server here; OpenAI itself needs only ``model``)::

            m = Memori(conn="memori.duckdb", backend="openai", model="qwen2.5-7b-instruct",
                       base_url="http://127.0.0.1:8080/v1", tokens_per_minute=200_000)
    """

    def __init__(self, conn: Any = DEFAULT_DB, *,
                 backend: str | AugmentationBackend = "memori", api_key: str | None = None,
                 base_url: str | None = None, http_client: httpx.AsyncClient | None = None,
                 embedder: Any = None, **backend_options: Any) -> None:
        super().__init__(conn, backend=backend, api_key=api_key, base_url=base_url,
                         http_client=http_client, embedder=embedder, **backend_options)
        self.config = MemoriConfig(self)
        self.entity_id: str | None = None
        self.process_id: str | None = None

    def __repr__(self) -> str:
        where = (f"store={self._store!r}" if self._store is not None
                 else f"conn={conn_for_display(self._conn)}")
        return f"Memori({where}, backend={self.backend!r})"

    def attribution(self, entity_id: str | None = None, process_id: str | None = None) -> Memori:
        """Set who conversations belong to by default (``entity_id``) and the agent
        (``process_id``). SeedData carries its own entity; ``process_id`` fills in for
        SeedData that has none."""
        self.entity_id = stored_id(entity_id)  # (as seeding stores it)
        self.process_id = stored_id(process_id)
        return self

    async def seed(self, seed_data: SeedData | Iterable[SeedData],
                   seed_config: SeedConfig | None = None, batch_size: int | None = None,
                   on_progress: OnProgress | None = None, *, force: bool = False,
                   progress: ProgressSink | OnProgress | bool | None = None,
                   keep_results: bool = True) -> SeedResult:
        """Extract facts from every conversation and store them.

        Args:
            seed_data: a :class:`SeedData`, or a list or any iterable of them (one per
                entity; an iterator is consumed lazily, for streamed sources); or a
                DataFrame or file path, read as :func:`memori_nb.to_seeds` reads them.
            seed_config: limits, retries and concurrency (``SeedConfig()`` by default).
            batch_size: requests in flight at once; overrides ``seed_config.batch_size``.
            on_progress: Memori's name for a progress function: ``on_progress(processed,
                total, result)`` after each conversation, in completion order (the same as
                passing it as ``progress``).
            force: send again conversations the ledger says were already seeded.
            progress: a bar by default in a notebook or a terminal (``False`` turns it off);
                or a progress display such as :class:`memori_nb.progress.TqdmProgress`, or
                a function as for ``on_progress``.
            keep_results: keep each conversation's result in the returned SeedResult; turn
                off for millions of conversations (they are in ``m.results()`` anyway).

        Returns:
            A :class:`SeedResult`; invalid conversations are failed results there, not errors.
            Interrupting the kernel (or :meth:`stop`) returns what finished, with
            ``stopped_reason="interrupted"``; running again continues where it stopped.

        Raises:
            MissingApiKeyError: the ``memori`` backend has no API key (nothing is sent).
            AmbiguousTimestampsError: dates that could be day/month or month/day, and
                nothing says which (pass ``dayfirst=`` to SeedData.for_conversations).
            InvalidInputError: ``seed_data`` is not SeedData.
            ConfigurationError: both ``on_progress`` and ``progress`` given.
        """
        if on_progress is not None:
            if progress is not None:
                raise ConfigurationError("pass one of on_progress= and progress= (progress "
                                         "takes a function, a display, True or False)")
            progress = on_progress
        seeds = to_seeds(seed_data)
        if isinstance(seeds, list):
            # Dates that could be day/month or month/day stop here, before anything is sent.
            seeds = [s if s.options is not None else replace(s, options=options_for(s))
                     for s in seeds]
        if batch_size is not None:
            seed_config = replace(seed_config or SeedConfig(), batch_size=batch_size)
        if self.process_id:
            seeds = ([self._with_process(s) for s in seeds] if isinstance(seeds, list)
                     else map(self._with_process, seeds))
        return await self.run(seeds, seed_config=seed_config, progress=progress, force=force,
                              keep_results=keep_results)

    def plan(self, data: Any, **kwargs: Any) -> Plan:
        """What :meth:`seed` would do with ``data`` on this database and backend, sending
        nothing: how many conversations are to send, already seeded or invalid, and the
        requests, tokens, cost and time it would take (see :func:`memori_nb.plan`).

        Args:
            data: a DataFrame, a :class:`SeedData` or a list of them.
            **kwargs: ``seed_config``, ``batch_size``, ``latency``, ``force``, ``reach``
                and a DataFrame's column keywords, as :func:`memori_nb.plan` takes them.

        Returns:
            A :class:`memori_nb.plan.Plan`.

        Example:
            >>> m = Memori(conn=":memory:", backend="local")
            >>> m.plan(SeedData.for_conversations(entity_id="u1", conversations=[
            ...     {"id": "c1", "messages": [{"role": "user", "content": "Hi."}]}])).to_send
            1
        """
        # The store if open, else its conn: planning reads, and makes no database file.
        db = self._store if self._store is not None else self._conn
        return plan(data, db=db, backend=self.backend, **kwargs)

    def _with_process(self, seed: SeedData) -> SeedData:
        """The attribution's process_id for SeedData that has none of its own."""
        if not isinstance(seed, SeedData) or seed.process_id:
            return seed
        return SeedData(entity_id=seed.entity_id, conversations=seed.conversations,
                        process_id=self.process_id)

    def results(self, run_id: str | None = None):
        """Per-conversation results of a run (the latest by default) as a DataFrame."""
        return self.store.results(run_id)

    def failures(self, run_id: str | None = None):
        """Failed conversations of a run (the latest by default) as a DataFrame."""
        return self.store.failures(run_id)

    def facts(self, entity_id: str | None = None):
        """Deduplicated facts (all entities, or one) as a DataFrame."""
        return self.store.facts(stored_id(entity_id))

    def runs(self):
        """Every run, newest first, with its totals and status, as a DataFrame."""
        return self.store.runs()

    def sql(self, query: str, params: list[Any] | None = None):
        """Query the store with SQL; returns a DataFrame. Placeholders are the database's:
        ``?`` for DuckDB and SQLite, ``%s`` for PostgreSQL."""
        return self.store.sql(query, params)

    def recall(self, query: str, limit: int = 5, *, entity_id: str | None = None) -> list[dict]:
        """The facts most relevant to ``query`` for an entity, best first, ranked as Memori's
        recall ranks them: embedding similarity over the entity's 1,000 most recent facts,
        then a lexical re-ranking of the best candidates.

        On DuckDB the facts are embedded by the first recall that needs them and the
        vectors kept (table ``fact_embeddings``), so that first recall takes longer.

        Args:
            query: a question or phrase, e.g. ``"where does the user live?"``.
            limit: how many facts at most.
            entity_id: whose facts; defaults to ``attribution(entity_id=...)``, else the
                store's only entity.

        Returns:
            A list of dicts with ``content``, ``score`` (blended), ``similarity`` (cosine),
            ``conversations`` (ids of the conversations that stated the fact),
            ``first_seen``, ``last_seen``, ``date_last_time``, ``entity_id`` and ``id`` (the
            Memori row, on the SQL store). Empty when the entity has no facts.

        Raises:
            ConfigurationError: no entity given or attributed and not exactly one in the
                store; a bad query or limit; the embedding model is not installed
                (``pip install 'memori_nb[recall]'``).

        Example::

            m.recall("what pet does the user have?", entity_id="user-ana", limit=3)
        """
        from .recall import recall_facts

        return recall_facts(self.store, stored_id(entity_id) or self.entity_id, query,
                            limit=limit)

    def sources(self, fact_or_query: str, *, entity_id: str | None = None, limit: int = 5):
        """Facts beside the messages they came from, as a DataFrame.

        Args:
            fact_or_query: a fact of the entity, exactly as stored (``m.facts()`` lists
                them), or a question: then the sources of the ``limit`` facts
                :meth:`recall` finds for it, best first.
            entity_id: whose facts; defaults to the one recall uses.
            limit: how many recalled facts to show for a question.

        Returns:
            One row per (fact, source message): entity_id, fact, conversation_id, position,
            role, said_at and message (the text around the fact's words). See
            :mod:`memori_nb.provenance` for how the messages are found.

        Example:
            >>> m.sources("user lives_in Lisbon")                   # doctest: +SKIP
            >>> m.sources("where does the user live?", limit=3)     # doctest: +SKIP
        """
        entity = stored_id(entity_id) or self.entity_id
        stated = self.store.fact_sources(entity, [fact_or_query])
        if len(stated) and stated.entity_id.nunique() == 1:  # a fact of one entity
            return stated
        recalled = self.recall(fact_or_query, limit, entity_id=entity_id)
        facts = [hit["content"] for hit in recalled]
        if not facts:
            return self.store.fact_sources(entity, [])
        entity = entity or recalled[0].get("entity_id")
        frame = self.store.fact_sources(entity, facts)
        # Best recalled fact first.
        rank = {fact: i for i, fact in enumerate(facts)}
        return frame.sort_values("fact", key=lambda column: column.map(rank),
                                 kind="stable").reset_index(drop=True)
