"""The DuckDB store: the memory model, the run ledger, and result queries as DataFrames.

Tables (all created by :meth:`DuckDBStore.build`, idempotently):

- ``runs``: one row per seeding run (backend, config, status, totals, and the ``host`` and
  ``pid`` of the process running it: a run whose process died shows as ``unfinished``;
  ``prompt_tokens``, ``completion_tokens`` and ``cost`` in US dollars for backends that bill
  by token, else NULL).
- ``conversation_results``: one row per conversation per run (status, error and its short
  reason, chunks, triples, timings, tokens and cost as in ``runs``): the run ledger.
- ``seeded_conversations``: the no-double-billing ledger, one row per (entity, conversation id,
  content hash) that succeeded. A later run skips what is here unless forced.
- ``conversations`` (title, source timestamps of the first and last message, the content hash
  seeded last) and ``messages`` (each message with the time it was said at the source). Source
  times are UTC.
- ``entities``, ``facts`` (deduplicated per entity, with ``mention_count``: how many
  conversations stated it; ``first_seen``/``last_seen``: the earliest and latest source time
  of the messages that stated it, NULL when the input had no times; ``first_seeded``/
  ``last_seeded``: when memori_nb first and last wrote it), ``triples`` (one row per extracted
  triple, with its conversation), ``conversation_summaries``, ``process_attributes`` (counted
  like facts): the memory model. ``fact_mentions`` and ``attribute_mentions`` say which
  conversation stated what (a fact mention also has ``positions``, the messages that stated
  it as :func:`memori_nb.provenance.locate` finds them, and their source times ``first_said``
  and ``last_said``: the conversation's span when no message was found), so that a
  conversation seeded again (forced, or with changed content) replaces what its earlier
  version contributed: rows, counts and fact times are as after one run.
- ``partial_conversations``: what the finished chunks of a conversation returned when a run
  stopped in the middle of it (quota), so the next run sends only the rest.
- ``fact_embeddings``: recall's vectors (``FLOAT[384]``), one per distinct fact text, computed
  by the first recall that needs them rather than while seeding.

All writes of a batch happen in one transaction, from NumPy columns DuckDB reads directly
rather than one INSERT per row. A lock serialises use of the connection, because the engine
writes from a worker thread while the event loop keeps running.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ..errors import StoreError
from ..models import Extraction, SeedConfig, SeedCounters
from ..provenance import fact_sources
from ..recall import RECALL_FACTS
from ..wording import plural
from .base import (RESULT_ORDER_SQL, PartialRecord, ResultRecord, claim_run,
                   extraction_from_json,
                   extraction_to_json, orphaned_reason, release_run, run_is_orphaned,
                   this_process, with_excerpts)
from .journal import journal_beside

DEFAULT_DB = "memori.duckdb"
# The memory a database file memori_nb opens may use (``SET memory_limit`` raises it).
MEMORY_LIMIT = "256MB"
# Fact texts embedded per model call and insert when recall fills ``fact_embeddings``.
EMBED_BATCH = 256

# The keys of the tables that grow with every conversation, which have no index (_SCHEMA).
_UNINDEXED_KEYS = {"seeded_conversations": ("entity_id", "conversation_id", "content_hash"),
                   "conversations": ("entity_id", "conversation_id"),
                   "facts": ("entity_id", "fact"),
                   "conversation_summaries": ("entity_id", "conversation_id")}

# Recall's vectors, one per distinct fact text whatever the entity, made by the first recall
# that needs them (seeding never embeds). Unique by text: inserts skip texts already here.
_FACT_EMBEDDINGS = """
CREATE TABLE IF NOT EXISTS fact_embeddings (
    fact VARCHAR NOT NULL, embedding FLOAT[384] NOT NULL);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    backend VARCHAR, force BOOLEAN, config JSON, total BIGINT, successful BIGINT,
    failed BIGINT, skipped BIGINT, retries BIGINT, total_triples BIGINT, duration_ms DOUBLE,
    stopped_reason VARCHAR);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS host VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid BIGINT;
CREATE TABLE IF NOT EXISTS conversation_results (
    run_id VARCHAR, entity_id VARCHAR, process_id VARCHAR, conversation_id VARCHAR,
    content_hash VARCHAR, status VARCHAR, error VARCHAR, chunks_processed INTEGER,
    triples_count INTEGER, duration_ms DOUBLE, warnings VARCHAR[], summary VARCHAR,
    finished_at TIMESTAMP);
-- Tokens and cost (US dollars), for backends that bill by token; NULL for the others.
-- Added to databases an earlier version built, so new ones get them in the same order.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS prompt_tokens BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS completion_tokens BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS cost DOUBLE;
ALTER TABLE conversation_results ADD COLUMN IF NOT EXISTS prompt_tokens BIGINT;
ALTER TABLE conversation_results ADD COLUMN IF NOT EXISTS completion_tokens BIGINT;
ALTER TABLE conversation_results ADD COLUMN IF NOT EXISTS cost DOUBLE;
-- The tables that grow with every conversation have no primary key: DuckDB keeps a key's
-- index in memory, and at a million conversations in random order those indexes outgrow
-- MEMORY_LIMIT and every write fails. Writes keep them unique themselves (delete, insert).
CREATE TABLE IF NOT EXISTS seeded_conversations (
    entity_id VARCHAR NOT NULL, conversation_id VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL, run_id VARCHAR, seeded_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS conversations (
    entity_id VARCHAR NOT NULL, conversation_id VARCHAR NOT NULL, title VARCHAR,
    content_hash VARCHAR, message_count INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP,
    run_id VARCHAR, seeded_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS messages (
    entity_id VARCHAR, conversation_id VARCHAR, content_hash VARCHAR, position INTEGER,
    role VARCHAR, content VARCHAR, said_at TIMESTAMP, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS entities (
    entity_id VARCHAR PRIMARY KEY, first_seen TIMESTAMP, last_seen TIMESTAMP);
CREATE TABLE IF NOT EXISTS facts (
    entity_id VARCHAR NOT NULL, fact VARCHAR NOT NULL, mention_count BIGINT,
    first_seen TIMESTAMP, last_seen TIMESTAMP);
CREATE TABLE IF NOT EXISTS triples (
    entity_id VARCHAR, conversation_id VARCHAR, run_id VARCHAR, subject_name VARCHAR,
    subject_type VARCHAR, predicate VARCHAR, object_name VARCHAR, object_type VARCHAR,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS conversation_summaries (
    entity_id VARCHAR NOT NULL, conversation_id VARCHAR NOT NULL, summary VARCHAR,
    run_id VARCHAR, updated_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS process_attributes (
    process_id VARCHAR, attribute VARCHAR, mention_count BIGINT, last_seen TIMESTAMP,
    PRIMARY KEY (process_id, attribute));
CREATE TABLE IF NOT EXISTS fact_mentions (
    entity_id VARCHAR, conversation_id VARCHAR, fact VARCHAR);
CREATE TABLE IF NOT EXISTS attribute_mentions (
    process_id VARCHAR, attribute VARCHAR, entity_id VARCHAR, conversation_id VARCHAR);
CREATE TABLE IF NOT EXISTS partial_conversations (
    entity_id VARCHAR, conversation_id VARCHAR, content_hash VARCHAR, process_id VARCHAR,
    run_id VARCHAR, chunks_done INTEGER, chunk_count INTEGER, summary VARCHAR,
    extraction JSON, updated_at TIMESTAMP,
    PRIMARY KEY (entity_id, conversation_id, content_hash));
-- A result's short reason (the error without the conversation's name; why a row was
-- skipped): NULL in rows an earlier version wrote.
ALTER TABLE conversation_results ADD COLUMN IF NOT EXISTS reason VARCHAR;
""" + _FACT_EMBEDDINGS

_NOW = "timezone('UTC', now())"

# Added to databases an earlier version built (and to new ones, in the same order); see
# DuckDBStore._add_fact_provenance.
_FACT_PROVENANCE = """
ALTER TABLE fact_mentions ADD COLUMN IF NOT EXISTS positions INTEGER[];
ALTER TABLE fact_mentions ADD COLUMN IF NOT EXISTS first_said TIMESTAMP;
ALTER TABLE fact_mentions ADD COLUMN IF NOT EXISTS last_said TIMESTAMP;
ALTER TABLE facts ADD COLUMN first_seeded TIMESTAMP;
ALTER TABLE facts ADD COLUMN last_seeded TIMESTAMP;
UPDATE facts SET first_seeded = first_seen, last_seeded = last_seen;
UPDATE fact_mentions SET first_said = c.started_at, last_said = c.ended_at FROM conversations c
WHERE c.entity_id = fact_mentions.entity_id AND c.conversation_id = fact_mentions.conversation_id;
UPDATE facts SET first_seen = s.first_said, last_seen = s.last_said
FROM (SELECT f.entity_id, f.fact, min(m.first_said) AS first_said, max(m.last_said) AS last_said
      FROM facts f LEFT JOIN fact_mentions m USING (entity_id, fact) GROUP BY ALL) s
WHERE facts.entity_id = s.entity_id AND facts.fact = s.fact;
"""


class DuckDBStore:
    """Memories and run ledger in DuckDB.

    Args:
        conn: a database path (``"memori.duckdb"`` by default; opened with a memory limit of
            ``MEMORY_LIMIT``, so a long run stays small: ``store.conn.execute("SET
            memory_limit = '4GB'")`` for big analytical queries), ``":memory:"``, or an open
            ``duckdb`` connection (used as it is, and left open by :meth:`close`).
        embedder: what embeds facts and queries for recall (default: the bundled
            all-MiniLM-L6-v2, :class:`memori_nb.embeddings.Embedder`, loaded on first use).

    Raises:
        StoreError: the database cannot be opened (bad path; or locked by another process,
            whose PID the message names, e.g. a notebook kernel with the file open).

    Example:
        >>> store = DuckDBStore(":memory:")
        >>> store.build()
        >>> store.sql("select count(*) as n from facts").n[0]
        0
    """

    max_id_length = None
    threadsafe = True

    def __init__(self, conn: str | Path | duckdb.DuckDBPyConnection = DEFAULT_DB, *,
                 embedder: Any = None) -> None:
        self._embedder = embedder
        if isinstance(conn, duckdb.DuckDBPyConnection):
            self.conn, self._owns_conn, self.path = conn, False, None
        else:
            self.path = str(conn)
            try:
                self.conn = duckdb.connect(self.path)
            except duckdb.Error as exc:
                raise StoreError(_open_problem(self.path, exc)) from exc
            self._owns_conn = True
            # DuckDB's own progress bar would interleave with ours on stderr.
            self.conn.execute("SET enable_progress_bar = false")
            if not self.path.startswith(":memory:"):
                # DuckDB may otherwise cache up to 80% of the machine's memory, which a
                # million-conversation backfill fills; beyond the limit it spills to disk.
                # Set after connecting: a connection opened with other settings could not
                # share the file with the notebook's own connections to it.
                self.conn.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self._lock = threading.RLock()
        # Ledger look-ups go through their own cursor so they do not wait for a write
        # transaction in progress on the main connection (DuckDB gives each cursor a snapshot).
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path or 'connection'!r})"

    def build(self) -> None:
        """Create the tables if they do not exist (safe to call again), and mark runs whose
        process died (same host, pid gone) as ``unfinished`` rather than ``running``.

        Raises:
            StoreError: the database cannot be written (read-only, disk full).
        """
        with self._writing("create the tables"):
            self.conn.execute(_SCHEMA)
            self._drop_growing_keys()
            self._add_fact_provenance()
            host, _ = this_process()
            running = self.conn.execute("SELECT run_id, host, pid FROM runs WHERE status = "
                                        "'running' AND host = ?", [host]).fetchall()
            gone = [(orphaned_reason(h, p), run) for run, h, p in running
                    if run_is_orphaned(run, h, p)]
            if gone:
                self.conn.executemany("UPDATE runs SET status = 'unfinished', "
                                      "stopped_reason = ? WHERE run_id = ?", gone)

    def _drop_growing_keys(self) -> None:
        """Rebuild, once, the tables an earlier version gave a primary key that grows with
        every conversation (see _SCHEMA): same rows, no index."""
        keyed = [row[0] for row in self.conn.execute(
            "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = "
            "'PRIMARY KEY' AND database_name = current_database() AND schema_name = "
            "'main' AND list_contains(?, table_name)", [list(_UNINDEXED_KEYS)]).fetchall()]
        for table in keyed:
            not_null = "; ".join(f"ALTER TABLE memori_nb_rebuilt ALTER COLUMN {column} SET "
                                 f"NOT NULL" for column in _UNINDEXED_KEYS[table])
            self.conn.execute("BEGIN TRANSACTION")
            try:
                self.conn.execute(f"CREATE TABLE memori_nb_rebuilt AS SELECT * FROM {table}; "
                                  f"{not_null}; DROP TABLE {table}; "
                                  f"ALTER TABLE memori_nb_rebuilt RENAME TO {table}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def _add_fact_provenance(self) -> None:
        """Give ``facts`` and ``fact_mentions`` their provenance columns, once, in one
        transaction. An earlier version kept seeding times in ``facts.first_seen``/
        ``last_seen``: they move to ``first_seeded``/``last_seeded``, and the fact times become
        the span of the conversations that stated it (their messages' positions are unknown)."""
        present = self.conn.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = 'facts' AND column_name = "
            "'first_seeded'").fetchone()[0]
        if present:
            return
        self.conn.execute("BEGIN TRANSACTION")
        try:
            self.conn.execute(_FACT_PROVENANCE)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection if the store opened it."""
        with self._lock, self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._owns_conn:
                self.conn.close()

    @contextmanager
    def _writing(self, doing: str) -> Iterator[None]:
        """Holds the lock; a database error becomes a StoreError saying what failed."""
        with self._lock:
            try:
                yield
            except duckdb.Error as exc:
                if isinstance(exc, duckdb.BinderException):
                    # A column this version reads is missing: an earlier version's file,
                    # which build() upgrades (a read-only connection cannot).
                    raise StoreError(
                        f"could not {doing}: the database lacks what this memori_nb version "
                        f"keeps (an earlier version built it); open it once for writing, e.g. "
                        f"Memori(conn=path), to upgrade it ({str(exc).splitlines()[0]})"
                    ) from exc
                raise StoreError(f"could not {doing}: {exc}") from exc

    def journal_dir(self) -> Path | None:
        """Where runs journal what they finish (beside the database file; None in memory)."""
        with self._lock:
            (path,), = self.conn.execute("SELECT path FROM duckdb_databases() "
                                         "WHERE database_name = current_database()").fetchall()
        return journal_beside(path) if path else None

    # --- runs ---------------------------------------------------------------------------

    def start_run(self, run_id: str, *, backend: str, config: SeedConfig, force: bool) -> None:
        """Record a run as ``running``, with this process (host, pid)."""
        host, pid = claim_run(run_id)
        with self._writing("record the run"):
            self.conn.execute(
                f"INSERT INTO runs (run_id, started_at, status, backend, force, config, host, "
                f"pid) VALUES (?, {_NOW}, 'running', ?, ?, ?, ?, ?)",
                [run_id, backend, force, json.dumps(asdict(config)), host, pid])

    def finish_run(self, run_id: str, *, status: str, counters: SeedCounters,
                   duration_ms: float, stopped_reason: str | None) -> None:
        try:
            with self._writing("record the end of the run"):
                self.conn.execute(
                    f"UPDATE runs SET finished_at = {_NOW}, status = ?, total = ?, "
                    f"successful = ?, failed = ?, skipped = ?, retries = ?, "
                    f"total_triples = ?, duration_ms = ?, stopped_reason = ?, "
                    f"prompt_tokens = ?, completion_tokens = ?, cost = ? WHERE run_id = ?",
                    [status, counters.processed, counters.successful, counters.failed,
                     counters.skipped, counters.retries, counters.triples, duration_ms,
                     stopped_reason, counters.prompt_tokens, counters.completion_tokens,
                     counters.cost, run_id])
        finally:
            release_run(run_id)

    # --- ledger -------------------------------------------------------------------------

    def ledger_is_empty(self) -> bool:
        """True when no conversation has been seeded (or partly sent) in this database yet."""
        with self._lock:
            return self.conn.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM seeded_conversations) AND "
                "NOT EXISTS (SELECT 1 FROM partial_conversations)").fetchall()[0][0]

    def seeded_entities(self, entity_ids: set[str]) -> set[str]:
        """Which of ``entity_ids`` have a conversation in the ledger, or chunk progress saved
        (so the engine looks both up for them)."""
        if not entity_ids:
            return set()
        frame = pd.DataFrame({"entity_id": sorted(entity_ids)})
        with self._lock:
            rows = _query_frame(self.conn, "SELECT entity_id FROM ids SEMI JOIN "
                                "(SELECT entity_id FROM seeded_conversations UNION ALL "
                                "SELECT entity_id FROM partial_conversations) USING (entity_id)",
                                ids=frame)
        return {row[0] for row in rows}

    def already_seeded(self, keys: list[tuple[str, str, str]], *,
                       by_run: str | None = None) -> set[int]:
        """Positions in ``keys`` (entity_id, conversation_id, content_hash) seeded before
        (with ``by_run``: seeded last by that run)."""
        if not keys:
            return set()
        frame = pd.DataFrame.from_records(
            keys, columns=["entity_id", "conversation_id", "content_hash"])
        frame["position"] = range(len(keys))
        rows = self._read("SELECT k.position, s.run_id FROM keys k JOIN seeded_conversations s "
                          "USING (entity_id, conversation_id, content_hash)", keys=frame)
        return {position for position, run in rows if by_run is None or run == by_run}

    def _read(self, sql: str, **frames: pd.DataFrame) -> list:
        """A ledger look-up on its own cursor, so it does not wait for a write in progress
        on the main connection (DuckDB gives each cursor a snapshot)."""
        with self._reader_lock:
            if self._reader is None:
                with self._lock:
                    self._reader = self.conn.cursor()
            return _query_frame(self._reader, sql, **frames)

    def partials(self, keys: list[tuple[str, str, str]]
                 ) -> dict[tuple[str, str, str], PartialRecord]:
        """The chunk-level progress saved for these (entity_id, conversation_id,
        content_hash) keys, by key; keys with none are left out."""
        if not keys:
            return {}
        frame = pd.DataFrame.from_records(
            list(set(keys)), columns=["entity_id", "conversation_id", "content_hash"])
        rows = self._read("SELECT p.entity_id, p.process_id, p.conversation_id, "
                          "p.content_hash, p.chunks_done, p.chunk_count, p.summary, "
                          "p.extraction FROM partial_conversations p SEMI JOIN keys "
                          "USING (entity_id, conversation_id, content_hash)", keys=frame)
        return {(r[0], r[2], r[3]): PartialRecord(*r[:7], extraction_from_json(r[7]))
                for r in rows}

    # --- writes -------------------------------------------------------------------------

    def save_partial(self, run_id: str, record: PartialRecord) -> None:
        """Keep what the finished chunks of a stopped conversation returned (replacing what
        was kept for the same entity, conversation and content).

        Raises:
            StoreError: the database refused the write.
        """
        with self._writing(f"save the progress of conversation {record.conversation_id!r}"):
            self.conn.execute(
                f"INSERT OR REPLACE INTO partial_conversations VALUES "
                f"(?, ?, ?, ?, ?, ?, ?, ?, ?, {_NOW})",
                [record.entity_id, record.conversation_id, record.content_hash,
                 record.process_id, run_id, record.chunks_done, record.chunk_count,
                 record.summary, extraction_to_json(record.extraction)])

    def write(self, run_id: str, records: list[ResultRecord]) -> None:
        """Write finished conversations in one transaction: results, ledger, memories.

        A conversation seeded before (forced, or with other content) first loses what its
        earlier version contributed; a succeeded conversation's saved chunk progress goes.

        Raises:
            StoreError: the database refused the write (nothing of this batch is kept).
        """
        if not records:
            return
        batch = _batch_columns(records)
        made: dict[str, str] = {}  # the batch's tables and views, in the order made
        with self._lock:
            try:
                self.conn.execute("BEGIN TRANSACTION")
                # Each column is read from Python once (see _batch_columns for why that read
                # is kept short): tables that several statements read are copied first.
                for name, kind, select in _BATCH_TABLES:
                    if name in batch:
                        self.conn.register(f"{name}_columns", batch[name])
                        self.conn.execute(f"CREATE OR REPLACE TEMP {kind} {name} AS {select}")
                        made[name] = kind
                # Conversations with an earlier version in the ledger (any content).
                if "batch_ledger" in made and self.conn.execute(
                        f"SELECT count(*) FROM ({_REPLACED})").fetchone()[0]:
                    self.conn.execute(f"CREATE OR REPLACE TEMP TABLE batch_replaced AS {_REPLACED}")
                    made["batch_replaced"] = "TABLE"
                for statement, needs in _write_statements(run_id):
                    if needs in made:
                        self.conn.execute(statement)
                for name, kind in reversed(made.items()):
                    self.conn.execute(f"DROP {kind} {name}")
                self.conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    self.conn.execute("ROLLBACK")  # (the temporary tables go with it)
                except duckdb.Error:
                    pass  # no transaction left to roll back: the first failure is the one
                if isinstance(exc, (duckdb.Error, UnicodeEncodeError)):
                    raise StoreError(f"could not write {plural(len(records), 'result')}: "
                                     f"{exc}") from exc
                raise
            finally:
                for name in batch:
                    try:
                        self.conn.unregister(f"{name}_columns")
                    except duckdb.Error:
                        pass  # in an aborted transaction; the failure is already raised

    # --- queries ------------------------------------------------------------------------

    def sql(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run SQL against the store and return a DataFrame."""
        with self._lock:
            return self.conn.execute(query, params or []).df()

    def latest_run_id(self) -> str | None:
        with self._lock:
            rows = self.conn.execute(
                "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchall()
        return rows[0][0] if rows else None

    def runs(self) -> pd.DataFrame:
        """One row per run, newest first."""
        return self.sql("SELECT * EXCLUDE (config) FROM runs ORDER BY started_at DESC")

    def results(self, run_id: str | None = None, *, status: str | None = None,
                limit: int | None = None) -> pd.DataFrame:
        """Per-conversation results of one run (the latest by default): failed first, then
        succeeded, then skipped, each in the order they finished. ``reason`` says why a row
        failed or was skipped in a few words (``error`` has the whole message)."""
        run_id = run_id or self.latest_run_id()
        where = " AND status = ?" if status else ""
        return self.sql(f"SELECT * FROM conversation_results WHERE run_id = ?{where} "
                        f"ORDER BY {RESULT_ORDER_SQL}, finished_at, entity_id, conversation_id"
                        + (f" LIMIT {int(limit)}" if limit is not None else ""),
                        [run_id] + ([status] if status else []))

    def failures(self, run_id: str | None = None, *, limit: int | None = None) -> pd.DataFrame:
        """The failed conversations of one run (the latest by default), with their errors
        and short reasons, in the order they finished."""
        return self.results(run_id, status="failed", limit=limit)

    def warnings(self, run_id: str | None = None) -> pd.DataFrame:
        """One row per warning of a run (the latest by default): entity_id, conversation_id,
        warning (what was left out or repaired)."""
        return self.sql("SELECT entity_id, conversation_id, unnest(warnings) AS warning "
                        "FROM conversation_results WHERE run_id = ? AND len(warnings) > 0",
                        [run_id or self.latest_run_id()])

    def facts(self, entity_id: str | None = None) -> pd.DataFrame:
        """Deduplicated facts, most mentioned first; all entities unless one is given.

        Columns: entity_id, fact, mention_count (conversations that stated it), first_seen
        and last_seen (source times of the messages that stated it; NULL when the input had
        no times), first_seeded and last_seeded (when memori_nb wrote it).
        """
        where, params = _entity_filter(entity_id)
        with self._writing("read the facts"):
            return self.conn.execute(f"SELECT entity_id, fact, mention_count, first_seen, "
                                     f"last_seen, first_seeded, last_seeded FROM facts {where} "
                                     f"ORDER BY entity_id, mention_count DESC, fact",
                                     params).df()

    def fact_sources(self, entity_id: str | None = None,
                     facts: Sequence[str] | None = None) -> pd.DataFrame:
        """Facts beside the messages that stated them: one row per (fact, source message).

        Args:
            entity_id: one entity's facts (all entities by default).
            facts: only these fact texts (all by default).

        Returns:
            A DataFrame with entity_id, fact, conversation_id, position (of the message in
            its conversation), role, said_at (source time), message (its text, cut to the
            part around the fact's words). A conversation in which no message was found
            (see :mod:`memori_nb.provenance`) gives one row with position, role, said_at
            and message NULL.

        Example:
            >>> store = DuckDBStore(":memory:"); store.build()
            >>> list(store.fact_sources().columns)
            ['entity_id', 'fact', 'conversation_id', 'position', 'role', 'said_at', 'message']
        """
        where, params = _entity_filter(entity_id)
        wanted = pd.DataFrame({"fact": list(dict.fromkeys(facts or ()))})
        semi = "SEMI JOIN wanted USING (fact)" if facts is not None else ""
        with self._writing("read the facts' sources"):
            frame = _query_frame(self.conn, f"""
                WITH s AS (
                    SELECT entity_id, fact, conversation_id,
                           unnest(CASE WHEN len(positions) > 0 THEN positions
                                       ELSE [NULL::INTEGER] END) AS position
                    FROM fact_mentions {semi} {where})
                SELECT s.entity_id, s.fact, s.conversation_id, s.position, m.role, m.said_at,
                       m.content AS message
                FROM s LEFT JOIN messages m ON m.entity_id = s.entity_id
                     AND m.conversation_id = s.conversation_id AND m.position = s.position
                ORDER BY s.entity_id, s.fact, m.said_at NULLS LAST, s.conversation_id,
                         s.position NULLS LAST""", params, as_frame=True, wanted=wanted)
        return with_excerpts(frame)

    def entity_summaries(self) -> pd.DataFrame:
        """One row per entity: conversations, facts, mentions, triples, source time span."""
        return self.sql(_ENTITY_SUMMARY)

    def triples(self, entity_id: str | None = None) -> pd.DataFrame:
        """Extracted triples, one row per time a conversation produced one."""
        where, params = _entity_filter(entity_id)
        return self.sql(f"SELECT * FROM triples {where} ORDER BY entity_id, conversation_id",
                        params)

    # --- recall -------------------------------------------------------------------------

    @property
    def embedder(self) -> Any:
        """What embeds facts and queries for recall (made on first use)."""
        if self._embedder is None:
            from ..embeddings import Embedder

            self._embedder = Embedder()
        return self._embedder

    def similar_facts(self, entity_id: str, query_vector: Any,
                      pool: int) -> list[tuple[str, float, Any]]:
        """(fact, similarity, last_seen) of the ``pool`` facts of ``entity_id`` most similar
        to ``query_vector`` (a unit 384-float vector), best first.

        The candidates are the entity's ``RECALL_FACTS`` most recent facts, as Memori reads
        them; those without a vector in ``fact_embeddings`` are embedded first and kept.
        The ranking is DuckDB's ``array_inner_product`` (the cosine: vectors are unit length).

        Raises:
            ConfigurationError: the embedding model or its packages are not installed.
            StoreError: the database refused.
        """
        if not self._embed_missing(entity_id):
            return []
        with self._writing("rank the facts"):
            return self.conn.execute(_SIMILAR_FACTS, {
                "entity": entity_id, "candidates": RECALL_FACTS, "pool": pool,
                "query": query_vector}).fetchall()

    def _embed_missing(self, entity_id: str) -> bool:
        """Embed the recall candidates of ``entity_id`` that have no vector yet, a batch at a
        time (each batch kept at once); False when the entity has no facts. The model runs
        outside the lock: a seeding run in this process goes on writing meanwhile."""
        with self._writing("look for facts to embed"):
            # A database an earlier version built, and that no run has built since, has no
            # table for them yet. (Looked up first: a read-only database may still recall.)
            (has_table, read_only), = self.conn.execute(
                "SELECT (SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                "current_database() AND schema_name = 'main' AND table_name = "
                "'fact_embeddings') > 0, (SELECT readonly FROM duckdb_databases() WHERE "
                "database_name = current_database())").fetchall()
            if not has_table and not read_only:
                self.conn.execute(_FACT_EMBEDDINGS)
                has_table = True
            missing = (f"SELECT fact FROM ({_CANDIDATES}) ANTI JOIN fact_embeddings USING (fact)"
                       if has_table else f"SELECT fact FROM ({_CANDIDATES})")
            texts = [row[0] for row in self.conn.execute(
                missing, {"entity": entity_id, "candidates": RECALL_FACTS}).fetchall()]
            if not has_table and not texts:
                return False
        if texts and read_only:
            raise StoreError(f"{len(texts)} facts of {entity_id!r} have no embedding yet, and "
                             f"this database is open read-only: recall once with it open for "
                             f"writing (the vectors are kept), then read-only recall works")
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start:start + EMBED_BATCH]
            frame = pd.DataFrame({"fact": batch, "embedding": list(self.embedder.embed(batch))})
            with self._writing("keep the fact embeddings"):
                # Anti join: another recall may have stored some of these meanwhile.
                _query_frame(self.conn, "INSERT INTO fact_embeddings SELECT fact, "
                             "embedding::FLOAT[384] FROM batch_embeddings "
                             "ANTI JOIN fact_embeddings USING (fact)", batch_embeddings=frame)
        return True

    def fact_details(self, entity_id: str, facts: list[str]) -> dict[str, dict[str, Any]]:
        """For each of ``facts`` of ``entity_id``: ``id`` (None here), ``conversations`` (the
        ids of the conversations that stated it, earliest first), ``first_seen`` and
        ``last_seen``, as the ``facts`` table has them."""
        with self._writing("read the facts' conversations"):
            rows = self.conn.execute(_FACT_DETAILS, [entity_id, list(facts)]).fetchall()
        return {fact: {"id": None, "conversations": list(conversations or ()),
                       "first_seen": first, "last_seen": last}
                for fact, first, last, conversations in rows}

    def only_entity(self) -> tuple[str | None, int]:
        """(the entity, 1) when the store holds exactly one entity; else (None, how many)."""
        with self._writing("count the entities"):
            (count, first), = self.conn.execute(
                "SELECT count(*), min(entity_id) FROM entities").fetchall()
        return (first if count == 1 else None), count


# Recall's candidates: an entity's most recent facts (Memori reads 1,000), newest first:
# by source time, else (input without times) by when they were seeded, as Memori's
# date_last_time is.
_CANDIDATES = """
SELECT fact, coalesce(last_seen, last_seeded) AS last_seen FROM facts WHERE entity_id = $entity
ORDER BY 2 DESC NULLS LAST, mention_count DESC, fact LIMIT $candidates
"""
_SIMILAR_FACTS = f"""
SELECT c.fact, array_inner_product(e.embedding, $query::FLOAT[384]) AS similarity, c.last_seen
FROM ({_CANDIDATES}) c JOIN fact_embeddings e USING (fact)
ORDER BY similarity DESC, c.last_seen DESC NULLS LAST, c.fact
LIMIT $pool
"""
_FACT_DETAILS = """
SELECT f.fact, f.first_seen, f.last_seen,
       list(m.conversation_id ORDER BY m.first_said NULLS LAST, m.conversation_id)
           FILTER (WHERE m.conversation_id IS NOT NULL) AS conversations
FROM facts f
LEFT JOIN fact_mentions m ON m.entity_id = f.entity_id AND m.fact = f.fact
WHERE f.entity_id = ? AND list_contains(?, f.fact)
GROUP BY ALL
"""
_ENTITY_SUMMARY = """
SELECT e.entity_id,
       (SELECT count(*) FROM conversations c WHERE c.entity_id = e.entity_id) AS conversations,
       (SELECT count(*) FROM facts f WHERE f.entity_id = e.entity_id) AS facts,
       (SELECT coalesce(sum(mention_count), 0)::BIGINT FROM facts f
         WHERE f.entity_id = e.entity_id) AS fact_mentions,
       (SELECT count(*) FROM triples t WHERE t.entity_id = e.entity_id) AS triples,
       (SELECT min(started_at) FROM conversations c
         WHERE c.entity_id = e.entity_id) AS first_message_at,
       (SELECT max(ended_at) FROM conversations c
         WHERE c.entity_id = e.entity_id) AS last_message_at,
       e.first_seen AS first_seeded, e.last_seen AS last_seeded
FROM entities e ORDER BY e.entity_id
"""


def _query_frame(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None,
                 *, as_frame: bool = False, **frames: pd.DataFrame) -> Any:
    """Run ``sql`` with DataFrames registered as views; all its rows (or a DataFrame)."""
    for name, frame in frames.items():
        conn.register(name, frame)
    try:
        result = conn.execute(sql, params or [])
        return result.df() if as_frame else result.fetchall()
    finally:
        for name in frames:
            try:
                conn.unregister(name)
            except duckdb.Error:
                pass  # in an aborted transaction; the failure that matters is already raised


def _entity_filter(entity_id: str | None) -> tuple[str, list[Any]]:
    return ("WHERE entity_id = ?", [entity_id]) if entity_id is not None else ("", [])


def _batch_columns(records: list[ResultRecord]) -> dict[str, dict[str, np.ndarray]]:
    """A batch as NumPy columns, one dict per table, which DuckDB reads as they are (no
    DataFrames to build). Reading a column of Python objects takes the GIL once per 2,048
    values, and while the event loop's thread runs Python each take waits up to its switch
    interval: so the rows of messages, facts and triples name their conversation by its row
    ``k`` in ``batch_ledger`` instead of repeating its ids and hash, roles and triples (few
    distinct ones) are numbers into tables of the distinct ones (see :func:`_coded`), and
    times are ``datetime64`` columns. Empty tables are left out."""
    results = []
    # A conversation given twice in one batch (two SeedData of one entity): the last wins.
    kept: dict[tuple[str, str], ResultRecord] = {}
    for record in records:
        r = record.result
        results.append((r.entity_id, record.process_id, r.conversation_id, record.content_hash,
                        r.status, r.error, r.chunks_processed, r.triples_count, r.duration_ms,
                        list(r.warnings), r.summary, r.prompt_tokens, r.completion_tokens,
                        r.cost, r.reason))
        if r.status == "succeeded" and record.extraction is not None:
            kept[r.entity_id, r.conversation_id] = record
    ledger, conversations, facts, triples, attributes = [], [], [], [], []
    triple_counts, message_counts, roles, contents = [], [], [], []
    timed: list[tuple[int, list]] = []  # (first message row, source times) when any is known
    for k, record in enumerate(kept.values()):
        r, ext, conversation = record.result, record.extraction, record.conversation
        entity, cid = r.entity_id, r.conversation_id
        ledger.append((k, entity, cid, record.content_hash, ext.summary))
        triple_counts.append(len(ext.triples))
        triples += ext.triples
        if record.process_id:
            attributes += [(record.process_id, a, entity, cid) for a in ext.attributes]
        if conversation is None:
            message_counts.append(0)
            facts += [(k, fact, None, None, None) for fact in dict.fromkeys(ext.facts)]
            continue
        msgs = conversation.messages
        count = len(msgs)
        said = list(map(_SAID, msgs))
        known = [t for t in said if t is not None] if said.count(None) != count else ()
        start, end = min(known, default=None), max(known, default=None)
        conversations.append((k, conversation.title, count, start, end))
        facts += _fact_mentions(k, ext, msgs, said if known else None, start, end)
        if known:
            timed.append((len(roles), said))
        message_counts.append(count)
        roles += map(_ROLE, msgs)
        contents += map(_CONTENT, msgs)
    role_codes, distinct_roles = _coded(roles)
    triple_codes, distinct_triples = _coded(triples)
    # Each message's conversation (k) and position in it, counted in NumPy.
    message_k = np.repeat(np.arange(len(message_counts)), message_counts)
    firsts = np.cumsum(message_counts) - message_counts
    said_at = np.full(len(roles), _NAT, dtype=np.int64).view("datetime64[us]")
    for first, said in timed:
        said_at[first:first + len(said)] = _naive_utc(said)
    tables = {
        "batch_results": _columns(results, _RESULT_COLUMNS[1:]),
        "batch_ledger": _columns(ledger, (
            "k", "entity_id", "conversation_id", "content_hash", "summary")),
        "batch_conversations": _columns(conversations, (
            "k", "title", "message_count", "started_at", "ended_at"),
            times=("started_at", "ended_at")),
        "batch_facts": _columns(facts, ("k", "fact", "positions", "first_said", "last_said"),
                                times=("first_said", "last_said")),
        "batch_triple_values": {"triple": np.arange(len(distinct_triples)), **{
            name: _objects([getattr(t, name) for t in distinct_triples]) for name in (
                "subject_name", "subject_type", "predicate", "object_name", "object_type")}},
        "batch_triples": {"k": np.repeat(np.arange(len(triple_counts)), triple_counts),
                          "triple": triple_codes},
        "batch_attributes": _columns(attributes, (
            "process_id", "attribute", "entity_id", "conversation_id")),
        "batch_roles": {"role_code": np.arange(len(distinct_roles)),
                        "role": _objects(distinct_roles)},
        "batch_messages": {
            "k": message_k, "position": np.arange(len(roles)) - firsts[message_k],
            "role_code": role_codes, "content": _objects(contents), "said_at": said_at},
    }
    return {name: columns for name, columns in tables.items()
            if len(next(iter(columns.values())))}


def _columns(rows: list[tuple], names: Sequence[str], times: Sequence[str] = ()
             ) -> dict[str, np.ndarray]:
    """Row tuples as named columns: ``k`` as integers, ``times`` as naive UTC, the others as
    Python objects (DuckDB finds their types, NULLs included)."""
    columns = list(zip(*rows)) if rows else [()] * len(names)
    return {name: (np.array(column, dtype=np.int64) if name == "k" else
                   _naive_utc(column) if name in times else _objects(column))
            for name, column in zip(names, columns)}


def _objects(values: Sequence[Any]) -> np.ndarray:
    # (np.array would turn a column of lists into a 2-D array)
    return np.fromiter(values, dtype=object, count=len(values))


def _coded(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Each value as its position in the list of the distinct values, and that list. A
    column of few distinct strings costs DuckDB a GIL take per 2,048 rows; its codes none."""
    distinct = {value: code for code, value in enumerate(dict.fromkeys(values))}
    codes = np.fromiter(map(distinct.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, list(distinct)


def _fact_mentions(k: int, ext: Extraction, messages: Sequence[Any], said: list[Any] | None,
                   start: Any, end: Any) -> list[tuple]:
    """(k, fact, positions, first_said, last_said) per distinct fact: the messages that
    stated it and their source times (``said``, one per message, None when the input had
    none; the conversation's span ``start``..``end`` when none of its messages has a time)."""
    sources = fact_sources(ext, messages)
    if said is None:
        return [(k, fact, list(positions), None, None) for fact, positions in sources]
    rows = []
    for fact, positions in sources:
        times = [said[p] for p in positions if said[p] is not None]
        rows.append((k, fact, list(positions), min(times) if times else start,
                     max(times) if times else end))
    return rows


# The batch's tables as the write's statements read them, made in this order from the
# columns of _batch_columns (registered as <name>_columns): a TABLE when several statements
# read it, else a VIEW. Rows with a conversation's ``k`` get its ids from batch_ledger.
_BATCH_TABLES = [
    ("batch_results", "VIEW", "SELECT * FROM batch_results_columns"),
    ("batch_ledger", "TABLE", "SELECT * FROM batch_ledger_columns"),
    ("batch_conversations", "TABLE", "SELECT l.entity_id, l.conversation_id, c.title, "
     "l.content_hash, c.message_count, c.started_at, c.ended_at "
     "FROM batch_conversations_columns c JOIN batch_ledger l USING (k)"),
    ("batch_roles", "TABLE", "SELECT * FROM batch_roles_columns"),
    ("batch_messages", "VIEW", "SELECT l.entity_id, l.conversation_id, l.content_hash, "
     "m.position, r.role, m.content, m.said_at FROM batch_messages_columns m "
     "JOIN batch_ledger l USING (k) JOIN batch_roles r USING (role_code)"),
    ("batch_facts", "TABLE", "SELECT l.entity_id, l.conversation_id, f.fact, f.positions, "
     "f.first_said, f.last_said FROM batch_facts_columns f JOIN batch_ledger l USING (k)"),
    ("batch_triple_values", "TABLE", "SELECT * FROM batch_triple_values_columns"),
    ("batch_triples", "VIEW", "SELECT l.entity_id, l.conversation_id, v.subject_name, "
     "v.subject_type, v.predicate, v.object_name, v.object_type "
     "FROM batch_triples_columns t JOIN batch_ledger l USING (k) "
     "JOIN batch_triple_values v USING (triple)"),
    ("batch_attributes", "TABLE", "SELECT * FROM batch_attributes_columns"),
]

_REPLACED = ("SELECT DISTINCT entity_id, conversation_id FROM batch_ledger SEMI JOIN "
             "seeded_conversations USING (entity_id, conversation_id)")

# The columns of a batch's conversation_results rows (all but finished_at), by name: a
# database an earlier version built has the token and reason columns last, after finished_at.
_RESULT_COLUMNS = (
    "run_id", "entity_id", "process_id", "conversation_id", "content_hash", "status", "error",
    "chunks_processed", "triples_count", "duration_ms", "warnings", "summary", "prompt_tokens",
    "completion_tokens", "cost", "reason")


def _naive_utc(values: Sequence[Any]) -> np.ndarray:
    """Source times (datetimes, naive ones taken as UTC, or None) as naive UTC
    ``datetime64[us]`` (None as NaT, read as NULL): stored as TIMESTAMP, so fetching them as
    Python objects needs no time-zone package (DuckDB wants pytz for TIMESTAMPTZ). Counted
    in microseconds here: NumPy takes 1.3 us to convert each datetime itself."""
    return np.array([_NAT if t is None else
                     (t - (_EPOCH if t.tzinfo is None else _EPOCH_UTC)) // _MICROSECOND
                     for t in values], dtype=np.int64).view("datetime64[us]")


_EPOCH, _EPOCH_UTC = datetime(1970, 1, 1), datetime(1970, 1, 1, tzinfo=timezone.utc)
_ROLE, _CONTENT, _SAID = attrgetter("role"), attrgetter("content"), attrgetter("timestamp")
_MICROSECOND = timedelta(microseconds=1)
_NAT = np.iinfo(np.int64).min  # NumPy's NaT as an integer


# What an earlier version of a conversation contributed, taken away before the batch adds
# its own: counts go down by its mentions, its rows go, and the times of its facts become
# those of their other mentions (the batch's own are added after). (A fact whose count reaches 0 is
# deleted only at the end: deleting a key and inserting it again in one transaction fails on
# DuckDB before 1.2.)
_FORGET = """
UPDATE facts SET mention_count = facts.mention_count - gone.n, first_seen = gone.first_said,
    last_seen = gone.last_said
FROM (WITH g AS (SELECT entity_id, fact, count(*) AS n FROM fact_mentions
                 SEMI JOIN batch_replaced USING (entity_id, conversation_id) GROUP BY ALL)
      SELECT g.entity_id, g.fact, g.n, min(m.first_said) AS first_said,
             max(m.last_said) AS last_said
      FROM g LEFT JOIN (SELECT * FROM fact_mentions ANTI JOIN batch_replaced
                        USING (entity_id, conversation_id)) m USING (entity_id, fact)
      GROUP BY ALL) gone
WHERE facts.entity_id = gone.entity_id AND facts.fact = gone.fact;
UPDATE process_attributes SET mention_count = process_attributes.mention_count - gone.n
FROM (SELECT process_id, attribute, count(*) AS n FROM attribute_mentions
      SEMI JOIN batch_replaced USING (entity_id, conversation_id) GROUP BY ALL) gone
WHERE process_attributes.process_id = gone.process_id
  AND process_attributes.attribute = gone.attribute;
DELETE FROM fact_mentions WHERE (entity_id, conversation_id) IN
    (SELECT (entity_id, conversation_id) FROM batch_replaced);
DELETE FROM attribute_mentions WHERE (entity_id, conversation_id) IN
    (SELECT (entity_id, conversation_id) FROM batch_replaced);
DELETE FROM triples WHERE (entity_id, conversation_id) IN
    (SELECT (entity_id, conversation_id) FROM batch_replaced);
DELETE FROM messages WHERE (entity_id, conversation_id) IN
    (SELECT (entity_id, conversation_id) FROM batch_replaced);
DELETE FROM conversation_summaries WHERE (entity_id, conversation_id) IN
    (SELECT (entity_id, conversation_id) FROM batch_ledger WHERE summary IS NULL);
DELETE FROM seeded_conversations s USING batch_ledger b
WHERE s.entity_id = b.entity_id AND s.conversation_id = b.conversation_id
  AND s.content_hash <> b.content_hash;
"""
_DROP_UNMENTIONED = """
DELETE FROM facts WHERE mention_count <= 0;
DELETE FROM process_attributes WHERE mention_count <= 0;
"""


def _write_statements(run_id: str) -> list[tuple[str, str]]:
    """(statement, the batch frame it needs): a statement runs only when its frame has rows."""
    run = run_id.replace("'", "''")
    return [
        (f"INSERT INTO conversation_results ({', '.join(_RESULT_COLUMNS)}, finished_at) "
         f"SELECT '{run}', *, {_NOW} FROM batch_results", "batch_results"),
        (_FORGET, "batch_replaced"),
        # The tables without a key (see _SCHEMA): what the batch replaces goes first.
        ("DELETE FROM seeded_conversations s USING batch_ledger b WHERE "
         "s.entity_id = b.entity_id AND s.conversation_id = b.conversation_id AND "
         "s.content_hash = b.content_hash", "batch_ledger"),
        (f"INSERT INTO seeded_conversations SELECT entity_id, conversation_id, content_hash, "
         f"'{run}', {_NOW} FROM batch_ledger", "batch_ledger"),
        ("DELETE FROM partial_conversations WHERE (entity_id, conversation_id) IN "
         "(SELECT (entity_id, conversation_id) FROM batch_ledger)", "batch_ledger"),
        (f"INSERT INTO entities SELECT DISTINCT entity_id, {_NOW}, {_NOW} FROM batch_ledger "
         f"ON CONFLICT DO UPDATE SET last_seen = excluded.last_seen", "batch_ledger"),
        # A count is of conversations: a fact said twice in one conversation counts once.
        # (batch_facts has one row per fact and conversation.)
        ("INSERT INTO fact_mentions (entity_id, conversation_id, fact, positions, first_said, "
         "last_said) SELECT * FROM batch_facts", "batch_facts"),
        # Facts known already count the batch's mentions; the others are added. Source
        # times widen to the batch's (least/greatest skip NULLs).
        (f"UPDATE facts SET mention_count = facts.mention_count + b.n, "
         f"first_seen = least(facts.first_seen, b.first_said), "
         f"last_seen = greatest(facts.last_seen, b.last_said), last_seeded = {_NOW} "
         f"FROM (SELECT entity_id, fact, count(*) AS n, min(first_said) AS first_said, "
         f"max(last_said) AS last_said FROM batch_facts GROUP BY ALL) b "
         f"WHERE facts.entity_id = b.entity_id AND facts.fact = b.fact; "
         f"INSERT INTO facts (entity_id, fact, mention_count, first_seen, last_seen, "
         f"first_seeded, last_seeded) SELECT entity_id, fact, count(*), min(first_said), "
         f"max(last_said), {_NOW}, {_NOW} FROM batch_facts ANTI JOIN facts "
         f"USING (entity_id, fact) GROUP BY ALL", "batch_facts"),
        (f"INSERT INTO triples SELECT entity_id, conversation_id, '{run}', subject_name, "
         f"subject_type, predicate, object_name, object_type, {_NOW} FROM batch_triples",
         "batch_triples"),
        ("DELETE FROM conversation_summaries s USING batch_ledger b WHERE "
         "b.summary IS NOT NULL AND s.entity_id = b.entity_id AND "
         "s.conversation_id = b.conversation_id", "batch_ledger"),
        (f"INSERT INTO conversation_summaries SELECT entity_id, conversation_id, summary, "
         f"'{run}', {_NOW} FROM batch_ledger WHERE summary IS NOT NULL", "batch_ledger"),
        ("DELETE FROM conversations c USING batch_conversations b WHERE "
         "c.entity_id = b.entity_id AND c.conversation_id = b.conversation_id",
         "batch_conversations"),
        (f"INSERT INTO conversations SELECT *, '{run}', {_NOW} FROM batch_conversations",
         "batch_conversations"),
        (f"INSERT INTO messages SELECT *, '{run}' FROM batch_messages", "batch_messages"),
        ("INSERT INTO attribute_mentions SELECT DISTINCT * FROM batch_attributes",
         "batch_attributes"),
        (f"INSERT INTO process_attributes SELECT process_id, attribute, count(*), {_NOW} "
         f"FROM (SELECT DISTINCT * FROM batch_attributes) GROUP BY ALL ON CONFLICT DO UPDATE "
         f"SET mention_count = mention_count + excluded.mention_count, "
         f"last_seen = excluded.last_seen", "batch_attributes"),
        (_DROP_UNMENTIONED, "batch_replaced"),
    ]


def _open_problem(path: str, exc: duckdb.Error) -> str:
    """One line on why the file cannot be opened; for a lock, who holds it and what to do."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "lock" not in text.lower():
        return f"cannot open DuckDB database {path!r}: {text}"
    # DuckDB names the holder: 'Conflicting lock is held in /usr/bin/python3 (PID 4242)'.
    held = re.search(r"held in (.+?) \(PID (\d+)\)", text)
    who = (f"process {held.group(2)} ({Path(held.group(1)).name})" if held
           else "another process")
    return (f"DuckDB database {path!r} is in use by {who}, e.g. a notebook kernel: close "
            f"its connection there (m.close(), or restart that kernel), or use another file")
