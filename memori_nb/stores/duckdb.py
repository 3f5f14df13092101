"""The DuckDB store: the memory model, the run ledger, and result queries as DataFrames.

Tables (all created by :meth:`DuckDBStore.build`, idempotently):

- ``runs``: one row per seeding run (backend, config, status, totals).
- ``conversation_results``: one row per conversation per run (status, error, chunks, triples,
  timings): the run ledger.
- ``seeded_conversations``: the no-double-billing ledger, one row per (entity, conversation id,
  content hash) that succeeded. A later run skips what is here unless forced.
- ``conversations`` (title, source timestamps of the first and last message, the content hash
  seeded last) and ``messages`` (each message with the time it was said at the source; a forced
  re-seed appends another copy under its own run id). Source times are UTC.
- ``entities``, ``facts`` (deduplicated per entity, with ``mention_count``, ``first_seen``,
  ``last_seen``), ``triples`` (one row per extracted triple, with its conversation),
  ``conversation_summaries``, ``process_attributes``: the memory model.

All writes of a batch happen in one transaction, with DataFrame appends rather than one INSERT
per row. A lock serialises use of the connection, because the engine writes from a worker
thread while the event loop keeps running.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ..errors import StoreError
from ..models import SeedConfig, SeedCounters
from .base import ResultRecord

DEFAULT_DB = "memori.duckdb"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    backend VARCHAR, force BOOLEAN, config JSON, total BIGINT, successful BIGINT,
    failed BIGINT, skipped BIGINT, retries BIGINT, total_triples BIGINT, duration_ms DOUBLE,
    stopped_reason VARCHAR);
CREATE TABLE IF NOT EXISTS conversation_results (
    run_id VARCHAR, entity_id VARCHAR, process_id VARCHAR, conversation_id VARCHAR,
    content_hash VARCHAR, status VARCHAR, error VARCHAR, chunks_processed INTEGER,
    triples_count INTEGER, duration_ms DOUBLE, warnings VARCHAR[], summary VARCHAR,
    finished_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS seeded_conversations (
    entity_id VARCHAR, conversation_id VARCHAR, content_hash VARCHAR, run_id VARCHAR,
    seeded_at TIMESTAMP, PRIMARY KEY (entity_id, conversation_id, content_hash));
CREATE TABLE IF NOT EXISTS conversations (
    entity_id VARCHAR, conversation_id VARCHAR, title VARCHAR, content_hash VARCHAR,
    message_count INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP, run_id VARCHAR,
    seeded_at TIMESTAMP, PRIMARY KEY (entity_id, conversation_id));
CREATE TABLE IF NOT EXISTS messages (
    entity_id VARCHAR, conversation_id VARCHAR, content_hash VARCHAR, position INTEGER,
    role VARCHAR, content VARCHAR, said_at TIMESTAMP, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS entities (
    entity_id VARCHAR PRIMARY KEY, first_seen TIMESTAMP, last_seen TIMESTAMP);
CREATE TABLE IF NOT EXISTS facts (
    entity_id VARCHAR, fact VARCHAR, mention_count BIGINT, first_seen TIMESTAMP,
    last_seen TIMESTAMP, PRIMARY KEY (entity_id, fact));
CREATE TABLE IF NOT EXISTS triples (
    entity_id VARCHAR, conversation_id VARCHAR, run_id VARCHAR, subject_name VARCHAR,
    subject_type VARCHAR, predicate VARCHAR, object_name VARCHAR, object_type VARCHAR,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS conversation_summaries (
    entity_id VARCHAR, conversation_id VARCHAR, summary VARCHAR, run_id VARCHAR,
    updated_at TIMESTAMP, PRIMARY KEY (entity_id, conversation_id));
CREATE TABLE IF NOT EXISTS process_attributes (
    process_id VARCHAR, attribute VARCHAR, mention_count BIGINT, last_seen TIMESTAMP,
    PRIMARY KEY (process_id, attribute));
"""

_NOW = "timezone('UTC', now())"


class DuckDBStore:
    """Memories and run ledger in DuckDB.

    Args:
        conn: a database path (``"memori.duckdb"`` by default), ``":memory:"``, or an open
            ``duckdb`` connection (which is then left open by :meth:`close`).

    Raises:
        StoreError: the database cannot be opened (bad path, locked by another process).

    Example:
        >>> store = DuckDBStore(":memory:")
        >>> store.build()
        >>> store.sql("select count(*) as n from facts").n[0]
        0
    """

    max_id_length = None
    threadsafe = True

    def __init__(self, conn: str | Path | duckdb.DuckDBPyConnection = DEFAULT_DB) -> None:
        if isinstance(conn, duckdb.DuckDBPyConnection):
            self.conn, self._owns_conn, self.path = conn, False, None
        else:
            self.path = str(conn)
            try:
                self.conn = duckdb.connect(self.path)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open DuckDB database {self.path!r}: {exc}") from exc
            self._owns_conn = True
            # DuckDB's own progress bar would interleave with ours on stderr.
            self.conn.execute("SET enable_progress_bar = false")
        self._lock = threading.RLock()
        # Ledger look-ups go through their own cursor so they do not wait for a write
        # transaction in progress on the main connection (DuckDB gives each cursor a snapshot).
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path or 'connection'!r})"

    def build(self) -> None:
        """Create the tables if they do not exist (safe to call again)."""
        with self._lock:
            self.conn.execute(_SCHEMA)

    def close(self) -> None:
        """Close the connection if the store opened it."""
        with self._lock, self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._owns_conn:
                self.conn.close()

    # --- runs ---------------------------------------------------------------------------

    def start_run(self, run_id: str, *, backend: str, config: SeedConfig, force: bool) -> None:
        with self._lock:
            self.conn.execute(
                f"INSERT INTO runs (run_id, started_at, status, backend, force, config) "
                f"VALUES (?, {_NOW}, 'running', ?, ?, ?)",
                [run_id, backend, force, json.dumps(asdict(config))])

    def finish_run(self, run_id: str, *, status: str, counters: SeedCounters,
                   duration_ms: float, stopped_reason: str | None) -> None:
        with self._lock:
            self.conn.execute(
                f"UPDATE runs SET finished_at = {_NOW}, status = ?, total = ?, successful = ?, "
                f"failed = ?, skipped = ?, retries = ?, total_triples = ?, duration_ms = ?, "
                f"stopped_reason = ? WHERE run_id = ?",
                [status, counters.processed, counters.successful, counters.failed,
                 counters.skipped, counters.retries, counters.triples, duration_ms,
                 stopped_reason, run_id])

    # --- ledger -------------------------------------------------------------------------

    def ledger_is_empty(self) -> bool:
        """True when no conversation has been seeded in this database yet."""
        with self._lock:
            return self.conn.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM seeded_conversations)").fetchall()[0][0]

    def seeded_entities(self, entity_ids: set[str]) -> set[str]:
        """Which of ``entity_ids`` have at least one conversation in the ledger."""
        if not entity_ids:
            return set()
        frame = pd.DataFrame({"entity_id": sorted(entity_ids)})
        with self._lock:
            rows = _query_frame(self.conn, "SELECT DISTINCT entity_id FROM ids "
                                "SEMI JOIN seeded_conversations USING (entity_id)", ids=frame)
        return {row[0] for row in rows}

    def already_seeded(self, keys: list[tuple[str, str, str]]) -> set[int]:
        """Positions in ``keys`` (entity_id, conversation_id, content_hash) seeded before."""
        if not keys:
            return set()
        frame = pd.DataFrame.from_records(
            keys, columns=["entity_id", "conversation_id", "content_hash"])
        frame["position"] = range(len(keys))
        with self._reader_lock:
            if self._reader is None:
                with self._lock:
                    self._reader = self.conn.cursor()
            rows = _query_frame(self._reader,
                                "SELECT k.position FROM keys k JOIN seeded_conversations s "
                                "USING (entity_id, conversation_id, content_hash)", keys=frame)
        return {row[0] for row in rows}

    # --- writes -------------------------------------------------------------------------

    def write(self, run_id: str, records: list[ResultRecord]) -> None:
        """Write finished conversations in one transaction: results, ledger, memories."""
        if not records:
            return
        frames = _frames_for(run_id, records)
        with self._lock:
            try:
                self.conn.execute("BEGIN TRANSACTION")
                for statement, frame in _write_statements(frames):
                    if frame is not None and len(frame):
                        _query_frame(self.conn, statement, batch=frame)
                self.conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    self.conn.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # no transaction left to roll back: the first failure is the one
                if isinstance(exc, (duckdb.Error, UnicodeEncodeError)):
                    raise StoreError(f"could not write {len(records)} results: {exc}") from exc
                raise

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
        """Per-conversation results of one run (the latest by default)."""
        run_id = run_id or self.latest_run_id()
        where = " AND status = ?" if status else ""
        return self.sql(f"SELECT * FROM conversation_results WHERE run_id = ?{where} "
                        f"ORDER BY finished_at, entity_id, conversation_id"
                        + (f" LIMIT {int(limit)}" if limit is not None else ""),
                        [run_id] + ([status] if status else []))

    def failures(self, run_id: str | None = None, *, limit: int | None = None) -> pd.DataFrame:
        """The failed conversations of one run (the latest by default), with their errors."""
        return self.results(run_id, status="failed", limit=limit)

    def warnings(self, run_id: str | None = None) -> pd.DataFrame:
        """One row per warning of a run (the latest by default): entity_id, conversation_id,
        warning (what was left out or repaired)."""
        return self.sql("SELECT entity_id, conversation_id, unnest(warnings) AS warning "
                        "FROM conversation_results WHERE run_id = ? AND len(warnings) > 0",
                        [run_id or self.latest_run_id()])

    def facts(self, entity_id: str | None = None) -> pd.DataFrame:
        """Deduplicated facts, most mentioned first; all entities unless one is given."""
        where, params = _entity_filter(entity_id)
        return self.sql(f"SELECT * FROM facts {where} "
                        f"ORDER BY entity_id, mention_count DESC, fact", params)

    def entity_summaries(self) -> pd.DataFrame:
        """One row per entity: conversations, facts, mentions, triples, source time span."""
        return self.sql(_ENTITY_SUMMARY)

    def triples(self, entity_id: str | None = None) -> pd.DataFrame:
        """Extracted triples, one row per time a conversation produced one."""
        where, params = _entity_filter(entity_id)
        return self.sql(f"SELECT * FROM triples {where} ORDER BY entity_id, conversation_id",
                        params)


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


def _query_frame(conn: duckdb.DuckDBPyConnection, sql: str, **frames: pd.DataFrame) -> list:
    """Run ``sql`` with DataFrames registered as views; returns all rows."""
    for name, frame in frames.items():
        conn.register(name, frame)
    try:
        return conn.execute(sql).fetchall()
    finally:
        for name in frames:
            try:
                conn.unregister(name)
            except duckdb.Error:
                pass  # in an aborted transaction; the failure that matters is already raised


def _entity_filter(entity_id: str | None) -> tuple[str, list[Any]]:
    return ("WHERE entity_id = ?", [entity_id]) if entity_id is not None else ("", [])


def _frames_for(run_id: str, records: list[ResultRecord]) -> dict[str, pd.DataFrame]:
    """Column lists built in one pass, turned into one DataFrame per table."""
    results, ledger, facts, triples, summaries, attributes = [], [], [], [], [], []
    conversations = []
    # Messages are the bulk of a batch: built column by column, not as one tuple per row.
    messages: dict[str, list] = {name: [] for name in (
        "entity_id", "conversation_id", "content_hash", "position", "role", "content",
        "said_at")}
    for record in records:
        r = record.result
        results.append((run_id, r.entity_id, record.process_id, r.conversation_id,
                        record.content_hash, r.status, r.error, r.chunks_processed,
                        r.triples_count, r.duration_ms, list(r.warnings), r.summary))
        if r.status != "succeeded" or record.extraction is None:
            continue
        ext = record.extraction
        ledger.append((r.entity_id, r.conversation_id, record.content_hash))
        facts.extend((r.entity_id, fact) for fact in ext.facts)
        triples.extend((r.entity_id, r.conversation_id, t.subject_name, t.subject_type,
                        t.predicate, t.object_name, t.object_type) for t in ext.triples)
        if ext.summary:
            summaries.append((r.entity_id, r.conversation_id, ext.summary))
        if record.conversation is not None:
            said = [m.timestamp for m in record.conversation.messages]
            known = [t for t in said if t is not None]
            conversations.append((r.entity_id, r.conversation_id, record.conversation.title,
                                  record.content_hash, len(said), min(known, default=None),
                                  max(known, default=None)))
            msgs = record.conversation.messages
            count = len(msgs)
            messages["entity_id"] += [r.entity_id] * count
            messages["conversation_id"] += [r.conversation_id] * count
            messages["content_hash"] += [record.content_hash] * count
            messages["position"] += range(count)
            messages["role"] += [m.role for m in msgs]
            messages["content"] += [m.content for m in msgs]
            messages["said_at"] += said
        if record.process_id:
            attributes.extend((record.process_id, a) for a in ext.attributes)
    frame = pd.DataFrame.from_records
    conversations_frame = frame(conversations, columns=[
        "entity_id", "conversation_id", "title", "content_hash", "message_count", "started_at",
        "ended_at"])
    messages_frame = pd.DataFrame(messages)
    for table, column in ((conversations_frame, "started_at"), (conversations_frame, "ended_at"),
                          (messages_frame, "said_at")):
        table[column] = _naive_utc(table[column])
    return {
        "results": frame(results, columns=[
            "run_id", "entity_id", "process_id", "conversation_id", "content_hash", "status",
            "error", "chunks_processed", "triples_count", "duration_ms", "warnings", "summary"]),
        "ledger": frame(ledger, columns=["entity_id", "conversation_id", "content_hash"]),
        "facts": frame(facts, columns=["entity_id", "fact"]),
        "triples": frame(triples, columns=[
            "entity_id", "conversation_id", "subject_name", "subject_type", "predicate",
            "object_name", "object_type"]),
        "summaries": frame(summaries, columns=["entity_id", "conversation_id", "summary"]),
        "attributes": frame(attributes, columns=["process_id", "attribute"]),
        "conversations": conversations_frame,
        "messages": messages_frame,
        "run_id": run_id,
    }


def _naive_utc(values: pd.Series) -> pd.Series:
    """Source times as naive UTC: stored as TIMESTAMP, so fetching them as Python objects
    needs no time-zone package (DuckDB wants pytz for TIMESTAMPTZ)."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _write_statements(frames: dict[str, Any]) -> list[tuple[str, pd.DataFrame | None]]:
    run = frames["run_id"].replace("'", "''")
    return [
        (f"INSERT INTO conversation_results SELECT *, {_NOW} FROM batch", frames["results"]),
        (f"INSERT INTO seeded_conversations SELECT entity_id, conversation_id, content_hash, "
         f"'{run}', {_NOW} FROM batch ON CONFLICT DO NOTHING", frames["ledger"]),
        (f"INSERT INTO entities SELECT DISTINCT entity_id, {_NOW}, {_NOW} FROM batch "
         f"ON CONFLICT DO UPDATE SET last_seen = excluded.last_seen", frames["ledger"]),
        # Aggregate first: ON CONFLICT cannot update one row twice in a statement.
        (f"INSERT INTO facts SELECT entity_id, fact, count(*), {_NOW}, {_NOW} FROM batch "
         f"GROUP BY ALL ON CONFLICT DO UPDATE SET "
         f"mention_count = mention_count + excluded.mention_count, "
         f"last_seen = excluded.last_seen", frames["facts"]),
        (f"INSERT INTO triples SELECT entity_id, conversation_id, '{run}', subject_name, "
         f"subject_type, predicate, object_name, object_type, {_NOW} FROM batch",
         frames["triples"]),
        (f"INSERT INTO conversation_summaries SELECT entity_id, conversation_id, "
         f"last(summary), '{run}', {_NOW} FROM batch GROUP BY ALL "
         f"ON CONFLICT DO UPDATE SET summary = excluded.summary, run_id = excluded.run_id, "
         f"updated_at = excluded.updated_at", frames["summaries"]),
        (f"INSERT INTO conversations SELECT *, '{run}', {_NOW} FROM batch "
         f"ON CONFLICT DO UPDATE SET title = excluded.title, "
         f"content_hash = excluded.content_hash, message_count = excluded.message_count, "
         f"started_at = excluded.started_at, ended_at = excluded.ended_at, "
         f"run_id = excluded.run_id, seeded_at = excluded.seeded_at", frames["conversations"]),
        (f"INSERT INTO messages SELECT *, '{run}' FROM batch", frames["messages"]),
        (f"INSERT INTO process_attributes SELECT process_id, attribute, count(*), {_NOW} "
         f"FROM batch GROUP BY ALL ON CONFLICT DO UPDATE SET "
         f"mention_count = mention_count + excluded.mention_count, "
         f"last_seen = excluded.last_seen", frames["attributes"]),
    ]
