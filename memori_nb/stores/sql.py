"""The Memori store: memories in Memori's own tables (SQLite or PostgreSQL), so an app's Memori
SDK recalls what was seeded; memori_nb's ledger and run tables live beside them.

A seeded conversation becomes what the SDK itself would have written: the entity (and
process), a session and a conversation with its summary and messages, the facts with their
embeddings and a mention per conversation, the knowledge-graph rows, and the process
attributes. Where memori_nb differs, on purpose:

- counts are the number of distinct conversations that stated a fact (or triple, or
  attribute), recounted after every write, so re-running or forcing a conversation never
  inflates them (the SDK adds one per insert);
- a fact's ``date_last_time`` is when it was said at the source: the time of the latest
  message that stated it (see :mod:`memori_nb.provenance`), or of the last message of its
  conversation when that message has none, when the input had timestamps; the seeding time
  otherwise;
- a conversation seeded again (forced, or with changed content) replaces what its earlier
  version contributed.

memori_nb's own tables: ``memori_nb_runs`` (with the ``host`` and ``pid`` running each run:
a run whose process died shows as ``unfinished``; ``prompt_tokens``, ``completion_tokens``
and ``cost`` for backends that bill by token), ``memori_nb_conversation_results`` (with the
same three columns per conversation, and each result's short ``reason``),
``memori_nb_seeded_conversations`` (the ledger, which also links each seeded conversation to
its ``memori_conversation`` row), ``memori_nb_triple_mentions`` /
``memori_nb_attribute_mentions`` (which conversations stated a triple or an attribute),
``memori_nb_fact_sources`` (beside Memori's ``memori_entity_fact_mention``: per fact and
conversation, the ``position`` of each message that stated it and its source time
``said_at``; no row when no message was found), and
``memori_nb_partial_conversations`` (what the finished chunks of a conversation returned when
a run stopped in the middle of it, so the next run sends only the rest), and
``memori_nb_store`` (the database's id, which names its journal directory on this machine),
``memori_nb_claims`` and ``memori_nb_claim_leases`` (which worker is seeding which
conversation, and until when its lease holds: see :meth:`SqlStore.claim`).
Every batch is written in one transaction: results, ledger and memories together.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import StoreError
from ..models import CLAIMED_ELSEWHERE, SeedConfig, SeedCounters
from ..provenance import locate
from ..recall import RECALL_FACTS
from .base import (RESULT_ORDER_SQL, PartialRecord, ResultRecord, claim_run,
                   extraction_from_json,
                   extraction_to_json, orphaned_reason, release_run, run_is_orphaned,
                   this_process, with_excerpts)
from .connection import SqlConnection, open_sql_connection
from .journal import journal_beside, journal_in_cache
from .memori_schema import MAX_EXTERNAL_ID, MAX_NAME, SCHEMA_REVISION, memori_ddl

# Keys per IN (...) list: well under SQLite's limit of bound parameters.
IN_CHUNK = 300

_OWN_TYPES = {
    "sqlite": {"time": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER"},
    "postgresql": {"time": "TIMESTAMP", "int": "BIGINT", "float": "DOUBLE PRECISION",
                   "bool": "BOOLEAN"},
}
_OWN_TABLES = """
CREATE TABLE IF NOT EXISTS memori_nb_runs (
    run_id TEXT PRIMARY KEY, started_at {time}, finished_at {time}, status TEXT,
    backend TEXT, force {bool}, config TEXT, total {int}, successful {int}, failed {int},
    skipped {int}, retries {int}, total_triples {int}, duration_ms {float},
    stopped_reason TEXT);
CREATE TABLE IF NOT EXISTS memori_nb_conversation_results (
    run_id TEXT, entity_id TEXT, process_id TEXT, conversation_id TEXT, content_hash TEXT,
    status TEXT, error TEXT, chunks_processed {int}, triples_count {int},
    duration_ms {float}, warnings TEXT, summary TEXT, finished_at {time});
CREATE INDEX IF NOT EXISTS idx_memori_nb_conversation_results_run
    ON memori_nb_conversation_results (run_id);
CREATE TABLE IF NOT EXISTS memori_nb_seeded_conversations (
    entity_id TEXT NOT NULL, conversation_id TEXT NOT NULL, content_hash TEXT NOT NULL,
    run_id TEXT, seeded_at {time}, memori_conversation_id {int}, title TEXT,
    message_count {int}, started_at {time}, ended_at {time}, said_at {time},
    PRIMARY KEY (entity_id, conversation_id, content_hash));
CREATE INDEX IF NOT EXISTS idx_memori_nb_seeded_conversations_memori
    ON memori_nb_seeded_conversations (memori_conversation_id);
CREATE TABLE IF NOT EXISTS memori_nb_triple_mentions (
    knowledge_graph_id {int} NOT NULL, conversation_id {int} NOT NULL,
    PRIMARY KEY (knowledge_graph_id, conversation_id));
CREATE TABLE IF NOT EXISTS memori_nb_attribute_mentions (
    attribute_id {int} NOT NULL, conversation_id {int} NOT NULL,
    PRIMARY KEY (attribute_id, conversation_id));
CREATE TABLE IF NOT EXISTS memori_nb_store (store_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS memori_nb_fact_sources (
    fact_id {int} NOT NULL, conversation_id {int} NOT NULL, position {int}, said_at {time});
CREATE INDEX IF NOT EXISTS idx_memori_nb_fact_sources_fact
    ON memori_nb_fact_sources (fact_id, conversation_id);
CREATE INDEX IF NOT EXISTS idx_memori_nb_fact_sources_conversation
    ON memori_nb_fact_sources (conversation_id);
CREATE TABLE IF NOT EXISTS memori_nb_partial_conversations (
    entity_id TEXT NOT NULL, conversation_id TEXT NOT NULL, content_hash TEXT NOT NULL,
    process_id TEXT, run_id TEXT, chunks_done {int}, chunk_count {int}, summary TEXT,
    extraction TEXT, updated_at {time},
    PRIMARY KEY (entity_id, conversation_id, content_hash));
CREATE TABLE IF NOT EXISTS memori_nb_claims (
    entity_id TEXT NOT NULL, conversation_id TEXT NOT NULL, content_hash TEXT NOT NULL,
    worker TEXT NOT NULL, lease_until {float} NOT NULL,
    PRIMARY KEY (entity_id, conversation_id, content_hash));
CREATE INDEX IF NOT EXISTS idx_memori_nb_claims_worker ON memori_nb_claims (worker);
CREATE TABLE IF NOT EXISTS memori_nb_claim_leases (
    worker TEXT PRIMARY KEY, lease_until {float} NOT NULL);
"""
# The database's clock, in seconds since 1970, for claims' leases. One clock for every
# worker whatever host it runs on (hosts' clocks drift apart; the server's is the same for
# all); for SQLite, whose workers share one machine, that machine's clock. PostgreSQL's now()
# is the transaction's start: a claim's short transaction reads one time throughout.
_DB_EPOCH = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "CAST(extract(epoch FROM now()) AS DOUBLE PRECISION)",
}
# The PostgreSQL advisory lock build() holds (any constant of memori_nb's own).
_BUILD_LOCK = 0x6D656D6F72695F6E  # "memori_n"
# Columns added to memori_nb's tables after their first release, by table: (name, type).
# Tokens and cost (US dollars) are for backends that bill by token; NULL for the others.
_ADDED_COLUMNS = {
    "memori_nb_runs": (("host", "TEXT"), ("pid", "{int}"), ("prompt_tokens", "{int}"),
                       ("completion_tokens", "{int}"), ("cost", "{float}")),
    # reason: a result's short reason (the error without the conversation's name; why a
    # row was skipped); NULL in rows an earlier version wrote.
    "memori_nb_conversation_results": (("prompt_tokens", "{int}"),
                                       ("completion_tokens", "{int}"), ("cost", "{float}"),
                                       ("reason", "TEXT")),
}
# The columns of memori_nb_conversation_results a write fills, by name (a database an
# earlier version built has the token and reason columns last).
_RESULT_COLUMNS = ("run_id", "entity_id", "process_id", "conversation_id", "content_hash",
                   "status", "error", "chunks_processed", "triples_count", "duration_ms",
                   "warnings", "summary", "finished_at", "prompt_tokens", "completion_tokens",
                   "cost", "reason")
_TIME_COLUMNS = {"started_at", "finished_at", "seeded_at", "ended_at", "said_at", "first_seen",
                 "last_seen", "first_message_at", "last_message_at", "first_seeded",
                 "last_seeded"}


def uniq(*terms: str) -> str:
    """Memori's dedup key: SHA-256 of the joined terms, lower-cased, only ``a-z0-9`` kept.

    That key drops every letter beyond ASCII, so "user likes 寿司" and "user likes 天ぷら"
    would be one fact. For text with letters or digits of other scripts the key keeps every
    letter and digit instead; Latin text with accents ("Zürich") keeps Memori's own key, so
    the SDK and memori_nb deduplicate it alike.
    """
    text = "".join(terms)
    if text.isascii() or all(ord(ch) < 128 or not ch.isalnum() or _is_latin(ch)
                             for ch in text):
        key = re.sub(r"[^a-z0-9]", "", text.lower())
    else:
        key = "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold()
                      if ch.isalnum())
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _is_latin(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN")


class SqlStore:
    """Memori's tables in SQLite or PostgreSQL, with memori_nb's ledger beside them.

    Args:
        conn: a SQLAlchemy URL, Engine, Session or sessionmaker, a DB-API connection (sqlite3,
            psycopg) or a function returning one (see :mod:`memori_nb.stores.connection`).
        embedder: what turns fact texts into 384-float vectors (default: the bundled
            all-MiniLM-L6-v2, :class:`memori_nb.embeddings.Embedder`).

    Raises:
        ConfigurationError: ``conn`` is unusable, or the embedding model is not installed.
        StoreError: the database cannot be reached or holds a Memori schema revision other
            than the one memori_nb writes.
    """

    max_id_length = MAX_EXTERNAL_ID
    # Conversations per write transaction: SQLite locks the whole file while one is open,
    # and the app's own reads wait (5 s by default) before they fail.
    max_batch_rows = 500

    def __init__(self, conn: Any, *, embedder: Any = None) -> None:
        self._sql: SqlConnection = open_sql_connection(conn)
        self.dialect = self._sql.dialect
        self.threadsafe = self._sql.threadsafe
        self._conn = self._sql.connection
        self._embedder = embedder
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SqlStore({self._sql.description!r})"

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from ..embeddings import Embedder

            self._embedder = Embedder()
        return self._embedder

    # --- plumbing -----------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        """Our SQL uses ``?``; psycopg wants ``%s``."""
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Any]:
        """A cursor in a transaction, committed at the end or rolled back on any failure.

        Raises:
            StoreError: the database refused (the driver's error is chained).
        """
        with self._lock:
            self._reopen_if_lost()
            began = False
            cursor = self._conn.cursor()
            try:
                if write and self.dialect == "sqlite" and not self._conn.in_transaction:
                    # IMMEDIATE: take the write lock now, not halfway through the batch.
                    cursor.execute("BEGIN IMMEDIATE")
                    began = True
                elif write and getattr(self._conn, "autocommit", False) is True:
                    cursor.execute("BEGIN")  # a caller's connection in autocommit mode
                    began = True
                yield cursor
                # Drivers in autocommit mode ignore commit(): end what we began ourselves.
                cursor.execute("COMMIT") if began else self._conn.commit()
            except BaseException as exc:
                try:
                    cursor.execute("ROLLBACK") if began else self._conn.rollback()
                except Exception:  # noqa: BLE001 - the first failure is the one to report
                    pass
                if _is_db_error(exc) or isinstance(exc, UnicodeEncodeError):
                    raise StoreError(f"{self._sql.description}: {_db_problem(exc)}") from exc
                raise
            finally:
                try:
                    cursor.close()
                except Exception:  # noqa: BLE001 - a lost connection cannot close its cursor
                    pass

    def _reopen_if_lost(self) -> None:
        """After the server dropped the connection (restart, idle timeout), open a new one
        when memori_nb can (it made the connection, or has the factory)."""
        conn = self._conn
        lost = getattr(conn, "closed", False) or getattr(conn, "broken", False)
        if lost and self._sql.reopen is not None:
            self._sql = self._sql.reopen()
            self._conn = self._sql.connection

    def _run(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> None:
        cursor.execute(self._q(sql), tuple(params))

    def _many(self, cursor: Any, sql: str, rows: list[tuple]) -> None:
        if rows:
            cursor.executemany(self._q(sql), rows)

    def _rows(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor.execute(self._q(sql), tuple(params))
        return cursor.fetchall()

    def _rows_in(self, cursor: Any, sql: str, keys: Sequence[Any], width: int = 1, *,
                 fetch: bool = True, after: Sequence[Any] = ()) -> list[tuple]:
        """Run ``sql`` (with one ``{keys}`` slot, and ``after``'s placeholders after it)
        over ``keys`` in chunks; all rows."""
        out: list[tuple] = []
        keys = list(keys)
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start:start + IN_CHUNK]
            if width == 1:
                slot, params = ", ".join("?" * len(chunk)), chunk
            else:
                row = "(" + ", ".join("?" * width) + ")"
                slot = "VALUES " + ", ".join([row] * len(chunk))
                params = [value for key in chunk for value in key]
            params = [*params, *after]
            if fetch:
                out += self._rows(cursor, sql.format(keys=slot), params)
            else:
                self._run(cursor, sql.format(keys=slot), params)
        return out

    def _time(self, value: datetime | None, *, precise: bool = False) -> Any:
        """A time as the dialect stores it. SQLite: UTC text like ``datetime('now')`` (with
        microseconds when ``precise``, for memori_nb's own tables, where runs must sort).
        PostgreSQL: an aware datetime, which the server turns into the session's local time,
        as the SDK's ``CURRENT_TIMESTAMP`` is."""
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        if self.dialect != "sqlite":
            return value
        utc = value.astimezone(timezone.utc)
        return utc.strftime("%Y-%m-%d %H:%M:%S.%f" if precise else "%Y-%m-%d %H:%M:%S")

    def _now(self, *, precise: bool = False) -> Any:
        return self._time(datetime.now(timezone.utc), precise=precise)

    # --- schema ---------------------------------------------------------------------------

    def build(self) -> None:
        """Create Memori's schema when it is missing and memori_nb's tables (idempotent).

        Raises:
            StoreError: the database holds a Memori schema revision memori_nb does not know.
            ConfigurationError: the embedding model is not installed (checked here, before
                anything is sent, rather than when the first results are written).
        """
        load = getattr(self.embedder, "load", None)
        if load is not None:
            load()
        with self._transaction() as cursor:
            if self.dialect == "postgresql":
                # Workers building one new database at once: CREATE ... IF NOT EXISTS is not
                # safe against itself there (two create the same type), so one at a time.
                self._run(cursor, "SELECT pg_advisory_xact_lock(?)", [_BUILD_LOCK])
            revision = self._schema_revision(cursor)
            if revision is None or revision == 1:  # missing, or one revision behind
                # The statements are idempotent: what revision 1 has stays as it is.
                for statement in memori_ddl(self.dialect):
                    self._run(cursor, statement)
                self._run(cursor, "DELETE FROM memori_schema_version")
                self._run(cursor, "INSERT INTO memori_schema_version (num) VALUES (?)",
                          [SCHEMA_REVISION])
            elif revision != SCHEMA_REVISION:
                raise StoreError(
                    f"this database holds Memori's schema at revision {revision}; memori_nb "
                    f"writes revision {SCHEMA_REVISION} (the Memori SDK 3.3 schema). Seed "
                    f"into a database built by that SDK version, or a new one")
            types = _OWN_TYPES[self.dialect]
            for statement in _OWN_TABLES.format(**types).split(";"):
                if statement.strip():
                    self._run(cursor, statement)
            for table, added in _ADDED_COLUMNS.items():
                cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
                present = {d[0] for d in cursor.description}
                for name, kind in added:
                    if name not in present:  # SQLite has no ADD COLUMN IF NOT EXISTS
                        self._run(cursor, f"ALTER TABLE {table} ADD COLUMN {name} "
                                          f"{kind.format(**types)}")
            self._mark_unfinished(cursor)
            if not self._rows(cursor, "SELECT 1 FROM memori_nb_store"):
                self._run(cursor, "INSERT INTO memori_nb_store VALUES (?)", [uuid.uuid4().hex])

    def journal_dir(self) -> Path | None:
        """Where runs journal what they finish: beside a SQLite file, in the user's cache
        directory for a server (None for SQLite in memory)."""
        with self._transaction(write=False) as cursor:
            if self.dialect == "sqlite":
                files = self._rows(cursor, "PRAGMA database_list")
                path = next((row[2] for row in files if row[1] == "main"), "")
                return journal_beside(path) if path else None
            # Two processes building a new database at once may both add an id: take one.
            return journal_in_cache(self._rows(cursor, "SELECT min(store_id) FROM "
                                                       "memori_nb_store")[0][0])

    def _mark_unfinished(self, cursor: Any) -> None:
        """Runs still ``running`` whose process on this host is gone become ``unfinished``.
        Then the claims held under the run id (a plain run's) of any run no longer running
        are freed at once: the next run replays a dead run's journal before it claims, so
        need not wait out the lease."""
        host, _ = this_process()
        running = self._rows(cursor, "SELECT run_id, host, pid FROM memori_nb_runs WHERE "
                                     "status = 'running' AND host = ?", [host])
        self._many(cursor, "UPDATE memori_nb_runs SET status = 'unfinished', "
                           "stopped_reason = ? WHERE run_id = ?",
                   [(orphaned_reason(h, int(p)), run) for run, h, p in running
                    if p is not None and run_is_orphaned(run, h, int(p))])
        # (Also a run cancelled while a claim was on its way in: it landed after the release.)
        for table in ("memori_nb_claims", "memori_nb_claim_leases"):
            self._run(cursor, f"DELETE FROM {table} WHERE worker IN (SELECT run_id FROM "
                              f"memori_nb_runs WHERE status <> 'running')")

    def _schema_revision(self, cursor: Any) -> int | None:
        if self.dialect == "sqlite":
            exists = self._rows(cursor, "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                        "AND name = 'memori_schema_version'")
        else:
            exists = self._rows(cursor, "SELECT 1 FROM information_schema.tables WHERE "
                                        "table_schema = current_schema() "
                                        "AND table_name = 'memori_schema_version'")
        if not exists:
            return None
        rows = self._rows(cursor, "SELECT max(num) FROM memori_schema_version")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def close(self) -> None:
        """Close the connection memori_nb opened (a caller's own connection stays open)."""
        with self._lock:
            if self._sql.close is not None:
                self._sql.close()

    # --- runs ---------------------------------------------------------------------------

    def start_run(self, run_id: str, *, backend: str, config: SeedConfig, force: bool) -> None:
        """Record a run as ``running``, with this process (host, pid)."""
        host, pid = claim_run(run_id)
        with self._transaction() as cursor:
            self._run(cursor, "INSERT INTO memori_nb_runs (run_id, started_at, status, backend, "
                              "force, config, host, pid) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                      [run_id, self._now(precise=True), backend, force,
                       json.dumps(asdict(config)), host, pid])

    def finish_run(self, run_id: str, *, status: str, counters: SeedCounters,
                   duration_ms: float, stopped_reason: str | None) -> None:
        with self._transaction() as cursor:
            self._run(cursor, "UPDATE memori_nb_runs SET finished_at = ?, status = ?, total = ?, "
                              "successful = ?, failed = ?, skipped = ?, retries = ?, "
                              "total_triples = ?, duration_ms = ?, stopped_reason = ?, "
                              "prompt_tokens = ?, completion_tokens = ?, cost = ? "
                              "WHERE run_id = ?",
                      [self._now(precise=True), status, counters.processed, counters.successful,
                       counters.failed, counters.skipped, counters.retries, counters.triples,
                       duration_ms, stopped_reason, counters.prompt_tokens,
                       counters.completion_tokens, counters.cost, run_id])
        release_run(run_id)

    # --- ledger -------------------------------------------------------------------------

    def ledger_is_empty(self) -> bool:
        """True when no conversation has been seeded (or partly sent) in this database yet."""
        with self._transaction(write=False) as cursor:
            return not any(self._rows(cursor, f"SELECT 1 FROM {table} LIMIT 1") for table in (
                "memori_nb_seeded_conversations", "memori_nb_partial_conversations"))

    def seeded_entities(self, entity_ids: set[str]) -> set[str]:
        """Which of ``entity_ids`` have a conversation in the ledger, or chunk progress saved
        (so the engine looks both up for them)."""
        found: set[str] = set()
        with self._transaction(write=False) as cursor:
            for table in ("memori_nb_seeded_conversations", "memori_nb_partial_conversations"):
                found.update(row[0] for row in self._rows_in(
                    cursor, f"SELECT DISTINCT entity_id FROM {table} WHERE entity_id IN "
                            f"({{keys}})", sorted(entity_ids)))
        return found

    def already_seeded(self, keys: list[tuple[str, str, str]], *,
                       by_run: str | None = None, since: datetime | None = None) -> set[int]:
        """Positions in ``keys`` (entity_id, conversation_id, content_hash) seeded before
        (with ``by_run``: seeded last by that run; with ``since``: at that time or later)."""
        when = " AND seeded_at >= ?" if since is not None else ""
        with self._transaction(write=False) as cursor:
            rows = self._rows_in(cursor, f"SELECT entity_id, conversation_id, content_hash, "
                                         f"run_id FROM memori_nb_seeded_conversations WHERE "
                                         f"(entity_id, conversation_id, content_hash) IN "
                                         f"({{keys}}){when}", sorted(set(keys)), width=3,
                                 after=[self._time(since, precise=True)] if when else [])
        seeded = {row[:3] for row in rows if by_run is None or row[3] == by_run}
        return {i for i, key in enumerate(keys) if key in seeded}

    def partials(self, keys: list[tuple[str, str, str]]
                 ) -> dict[tuple[str, str, str], PartialRecord]:
        """The chunk-level progress saved for these (entity_id, conversation_id,
        content_hash) keys, by key; keys with none are left out."""
        if not keys:
            return {}
        with self._transaction(write=False) as cursor:
            rows = self._rows_in(cursor, "SELECT entity_id, process_id, conversation_id, "
                                         "content_hash, chunks_done, chunk_count, summary, "
                                         "extraction FROM memori_nb_partial_conversations "
                                         "WHERE (entity_id, conversation_id, content_hash) IN "
                                         "({keys})", sorted(set(keys)), width=3)
        return {(r[0], r[2], r[3]): PartialRecord(r[0], r[1], r[2], r[3], int(r[4]),
                                                  int(r[5]), r[6], extraction_from_json(r[7]))
                for r in rows}

    # --- claims (workers seeding one store at once) --------------------------------------

    def claim(self, keys: list[tuple[str, str, str]], *, worker: str,
              lease_seconds: float) -> set[int]:
        """Claim conversations for ``worker`` so that no other worker sends them meanwhile.

        A worker's claims hold while its lease does: this call (and :meth:`renew_claims`)
        extends it to ``lease_seconds`` from now, by the database's clock. A conversation is
        claimed when nobody holds it, when its holder's lease ran out (a dead or stalled
        worker: taken over), or when ``worker`` holds it already. One transaction, atomic
        under concurrency: on PostgreSQL a row being claimed by another transaction waits
        for it to end and is then judged on what it wrote; SQLite's write lock lets one
        writer in at a time.

        Args:
            keys: (entity_id, conversation_id, content_hash) of each conversation.
            worker: the claiming worker's name (unique to its run).
            lease_seconds: how long the claims hold without renewal.

        Returns:
            The indices of ``keys`` that ``worker`` now holds.

        Raises:
            StoreError: the database refused (nothing was claimed).

        Example:
            >>> store = SqlStore("sqlite:///memori.db")
            >>> store.build()
            >>> key = ("user-1", "c1", "9f86d081884c7d65")  # entity, conversation, content
            >>> store.claim([key], worker="host-a:4711:1f2e", lease_seconds=60)
            {0}
            >>> store.claim([key], worker="host-b:93:77aa", lease_seconds=60)  # held: none
            set()
        """
        unique = sorted(set(keys))  # one order for every worker: no lock-order deadlocks
        if not unique:
            return set()
        now = _DB_EPOCH[self.dialect]
        held: set[tuple[str, str, str]] = set()
        with self._transaction() as cursor:
            self._run(cursor, f"INSERT INTO memori_nb_claim_leases (worker, lease_until) "
                              f"VALUES (?, {now} + ?) ON CONFLICT (worker) DO UPDATE SET "
                              f"lease_until = excluded.lease_until",
                      [worker, float(lease_seconds)])
            for start in range(0, len(unique), IN_CHUNK):
                chunk = unique[start:start + IN_CHUNK]
                rows = ", ".join([f"(?, ?, ?, ?, {now} + ?)"] * len(chunk))
                # Taken when free, ours, or both its own lease (as of its claim) and its
                # holder's lease (the one row renewals extend, not one per claim) have run
                # out. Both are needed on PostgreSQL: a row another transaction is claiming
                # is judged on that claim's version once it commits, but the sub-select sees
                # what had committed when this statement began, which may lack the holder's
                # first lease row.
                claim = (
                    f"INSERT INTO memori_nb_claims (entity_id, conversation_id, content_hash, "
                    f"worker, lease_until) VALUES {rows} ON CONFLICT (entity_id, "
                    f"conversation_id, content_hash) DO UPDATE SET worker = excluded.worker, "
                    f"lease_until = excluded.lease_until WHERE memori_nb_claims.worker = "
                    f"excluded.worker OR (memori_nb_claims.lease_until < {now} AND NOT EXISTS "
                    f"(SELECT 1 FROM memori_nb_claim_leases l WHERE l.worker = "
                    f"memori_nb_claims.worker AND l.lease_until >= {now}))")
                values = [value for key in chunk for value in (*key, worker, float(lease_seconds))]
                if self.dialect == "postgresql":
                    held.update(tuple(row) for row in self._rows(
                        cursor, claim + " RETURNING entity_id, conversation_id, content_hash",
                        values))
                else:
                    # RETURNING needs SQLite 3.35 (2021), which Python on older systems lacks.
                    # No other writer can come in between: SQLite lets one in at a time.
                    self._run(cursor, claim, values)
                    held.update(tuple(row) for row in self._rows(
                        cursor, f"SELECT entity_id, conversation_id, content_hash FROM "
                                f"memori_nb_claims WHERE worker = ? AND (entity_id, "
                                f"conversation_id, content_hash) IN (VALUES "
                                f"{', '.join(['(?, ?, ?)'] * len(chunk))})",
                        [worker, *(value for key in chunk for value in key)]))
        return {i for i, key in enumerate(keys) if key in held}

    def renew_claims(self, worker: str, lease_seconds: float) -> int:
        """Extend ``worker``'s lease, so all its claims hold ``lease_seconds`` from now (by
        the database's clock).

        Returns:
            How many claims ``worker`` holds (0 when none: released, or all taken over by
            others after its lease ran out).

        Raises:
            StoreError: the database refused.
        """
        now = _DB_EPOCH[self.dialect]
        with self._transaction() as cursor:
            self._run(cursor, f"UPDATE memori_nb_claim_leases SET lease_until = {now} + ? "
                              f"WHERE worker = ?", [float(lease_seconds), worker])
            return int(self._rows(cursor, "SELECT count(*) FROM memori_nb_claims WHERE "
                                          "worker = ?", [worker])[0][0])

    def release_claims(self, worker: str) -> None:
        """Drop every claim of ``worker`` (at the end of its run: the conversations it sent
        are in the ledger by then, the others free for any worker). Claims whose leases ran
        out go too: a dead worker's claims on conversations nobody claims again (found in
        the ledger, its journal replayed) would otherwise stay for ever.

        Raises:
            StoreError: the database refused (the claims then run out with the lease).
        """
        now = _DB_EPOCH[self.dialect]
        # The same test as a takeover's (see claim): a claim and its holder's lease run out.
        expired = (f"lease_until < {now} AND NOT EXISTS (SELECT 1 FROM memori_nb_claim_leases "
                   f"l WHERE l.worker = memori_nb_claims.worker AND l.lease_until >= {now})")
        unused = (f"lease_until < {now} AND NOT EXISTS (SELECT 1 FROM memori_nb_claims c "
                  f"WHERE c.worker = memori_nb_claim_leases.worker)")
        with self._transaction() as cursor:
            if self.dialect == "postgresql":
                # Locked in the order claim() takes rows (Python's string order is "C"'s):
                # a worker claiming some of these meanwhile holds the row it is refused
                # until its transaction ends, and locks taken in two orders deadlock.
                self._run(cursor, 'SELECT count(*) FROM (SELECT 1 FROM memori_nb_claims WHERE '
                                  'worker = ? ORDER BY entity_id COLLATE "C", conversation_id '
                                  'COLLATE "C", content_hash COLLATE "C" FOR UPDATE) AS mine',
                          [worker])
            self._run(cursor, "DELETE FROM memori_nb_claims WHERE worker = ?", [worker])
            self._run(cursor, "DELETE FROM memori_nb_claim_leases WHERE worker = ?", [worker])
            if self.dialect == "postgresql":
                # Rows others have locked (claiming them) are theirs to settle: skipped,
                # never waited for, so this cannot deadlock either.
                self._run(cursor, f"DELETE FROM memori_nb_claims WHERE (entity_id, "
                                  f"conversation_id, content_hash) IN (SELECT entity_id, "
                                  f"conversation_id, content_hash FROM memori_nb_claims WHERE "
                                  f"{expired} FOR UPDATE SKIP LOCKED)")
                self._run(cursor, f"DELETE FROM memori_nb_claim_leases WHERE worker IN (SELECT "
                                  f"worker FROM memori_nb_claim_leases WHERE {unused} FOR "
                                  f"UPDATE SKIP LOCKED)")
            else:  # one writer at a time
                self._run(cursor, f"DELETE FROM memori_nb_claims WHERE {expired}")
                self._run(cursor, f"DELETE FROM memori_nb_claim_leases WHERE {unused}")

    def claimed_elsewhere(self, run_id: str) -> set[tuple[str, str]]:
        """(entity id, conversation id) of what run ``run_id`` skipped because another
        worker held its claim: what to try again once that lease has run out."""
        with self._transaction(write=False) as cursor:
            return set(self._rows(cursor, "SELECT entity_id, conversation_id FROM "
                                          "memori_nb_conversation_results WHERE run_id = ? AND "
                                          "reason = ?", [run_id, CLAIMED_ELSEWHERE]))

    # --- writes -------------------------------------------------------------------------

    def save_partial(self, run_id: str, record: PartialRecord) -> None:
        """Keep what the finished chunks of a stopped conversation returned (replacing what
        was kept for the same entity, conversation and content).

        Raises:
            StoreError: the database refused the write.
        """
        with self._transaction() as cursor:
            self._run(cursor, "INSERT INTO memori_nb_partial_conversations VALUES "
                              "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (entity_id, "
                              "conversation_id, content_hash) DO UPDATE SET "
                              "process_id = excluded.process_id, run_id = excluded.run_id, "
                              "chunks_done = excluded.chunks_done, "
                              "chunk_count = excluded.chunk_count, summary = excluded.summary, "
                              "extraction = excluded.extraction, "
                              "updated_at = excluded.updated_at",
                      [record.entity_id, record.conversation_id, record.content_hash,
                       record.process_id, run_id, record.chunks_done, record.chunk_count,
                       record.summary, extraction_to_json(record.extraction),
                       self._now(precise=True)])

    def write(self, run_id: str, records: list[ResultRecord]) -> None:
        """Write finished conversations in one transaction: results, ledger, memories.

        A conversation seeded before (forced, or with other content) replaces what its
        earlier version contributed; a succeeded conversation's saved chunk progress goes.

        Raises:
            StoreError: the database refused the write (nothing of this batch is kept).
        """
        if not records:
            return
        done = _succeeded(records)
        vectors = self._embed_new_facts(done)
        with self._transaction() as cursor:
            self._write_results(cursor, run_id, records)
            if done:
                _BatchWrite(self, cursor, run_id, done, vectors).run()

    def prepare(self, records: list[ResultRecord]) -> None:
        """Embed ahead the new facts of results a coming :meth:`write` will hold (the
        batching writer calls this as they gather): the write then finds their vectors in the
        embedder's cache."""
        self._embed_new_facts(_succeeded(records))

    def _embed_new_facts(self, done: list[ResultRecord]) -> dict[str, bytes]:
        """Vectors for the fact texts the database does not have yet, computed before the
        transaction opens so it holds the write lock only for writing."""
        wanted = {(r.result.entity_id, uniq(fact)): fact
                  for r in done for fact in _facts_of(r)}
        if not wanted:
            return {}
        with self._transaction(write=False) as cursor:
            present = set(self._rows_in(
                cursor, "SELECT e.external_id, f.uniq FROM memori_entity_fact f JOIN "
                        "memori_entity e ON e.id = f.entity_id WHERE (e.external_id, f.uniq) "
                        "IN ({keys})", list(wanted), width=2))
        texts = sorted({fact for key, fact in wanted.items() if key not in present})
        return dict(zip(texts, self.embedder.embed_bytes(texts))) if texts else {}

    def _write_results(self, cursor: Any, run_id: str, records: list[ResultRecord]) -> None:
        now = self._now(precise=True)
        self._many(cursor, f"INSERT INTO memori_nb_conversation_results "
                           f"({', '.join(_RESULT_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(_RESULT_COLUMNS))})",
                   [(run_id, r.result.entity_id, r.process_id, r.result.conversation_id,
                     r.content_hash, r.result.status, r.result.error,
                     r.result.chunks_processed, r.result.triples_count, r.result.duration_ms,
                     json.dumps(list(r.result.warnings)), r.result.summary, now,
                     r.result.prompt_tokens, r.result.completion_tokens, r.result.cost,
                     r.result.reason)
                    for r in records])

    # --- queries ------------------------------------------------------------------------

    def sql(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run SQL against the database (with the driver's placeholders); a DataFrame."""
        with self._transaction(write=False) as cursor:
            if params:
                cursor.execute(query, tuple(params))
            else:
                cursor.execute(query)
            if cursor.description is None:
                return pd.DataFrame()
            columns = [d[0] for d in cursor.description]
            frame = pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
        for column in columns:
            if column in _TIME_COLUMNS:
                frame[column] = pd.to_datetime(frame[column])
        return frame

    def _select(self, query: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self.sql(self._q(query), list(params))

    def latest_run_id(self) -> str | None:
        frame = self._select("SELECT run_id FROM memori_nb_runs ORDER BY started_at DESC "
                             "LIMIT 1")
        return None if frame.empty else frame.run_id[0]

    def runs(self) -> pd.DataFrame:
        """One row per run, newest first (tokens and cost: NULL unless the backend bills by
        token)."""
        return _token_counts(self._select(
            "SELECT run_id, started_at, finished_at, status, backend, force, total, "
            "successful, failed, skipped, retries, total_triples, duration_ms, stopped_reason, "
            "host, pid, prompt_tokens, completion_tokens, cost FROM memori_nb_runs "
            "ORDER BY started_at DESC"))

    def results(self, run_id: str | None = None, *, status: str | None = None,
                limit: int | None = None) -> pd.DataFrame:
        """Per-conversation results of one run (the latest by default): failed first, then
        succeeded, then skipped, each in the order they finished. ``reason`` says why a row
        failed or was skipped in a few words (``error`` has the whole message)."""
        where = " AND status = ?" if status else ""
        frame = self._select(
            f"SELECT * FROM memori_nb_conversation_results WHERE run_id = ?{where} "
            f"ORDER BY {RESULT_ORDER_SQL}, finished_at, entity_id, conversation_id"
            + (f" LIMIT {int(limit)}" if limit is not None else ""),
            [run_id or self.latest_run_id()] + ([status] if status else []))
        frame["warnings"] = [json.loads(w) if w else [] for w in frame["warnings"]]
        return _token_counts(frame)

    def failures(self, run_id: str | None = None, *, limit: int | None = None) -> pd.DataFrame:
        """The failed conversations of one run (the latest by default), with their errors
        and short reasons, in the order they finished."""
        return self.results(run_id, status="failed", limit=limit)

    def warnings(self, run_id: str | None = None) -> pd.DataFrame:
        """One row per warning of a run (the latest by default): entity_id, conversation_id,
        warning (what was left out or repaired)."""
        frame = self._select("SELECT entity_id, conversation_id, warnings FROM "
                             "memori_nb_conversation_results WHERE run_id = ? AND "
                             "warnings <> '[]'", [run_id or self.latest_run_id()])
        rows = [(e, c, w) for e, c, ws in frame.itertuples(index=False) for w in json.loads(ws)]
        return pd.DataFrame(rows, columns=["entity_id", "conversation_id", "warning"])

    def facts(self, entity_id: str | None = None) -> pd.DataFrame:
        """Deduplicated facts, most mentioned first.

        Columns: entity_id, fact, mention_count (conversations that stated it), first_seen
        and last_seen (source times of the messages that stated it; NULL when the input had
        no times), first_seeded and last_seeded (when memori_nb seeded the conversations
        that stated it). Facts the app's own SDK wrote have no times here.
        """
        where, params = _entity_where(entity_id)
        inner = ("WHERE m.entity_id IN (SELECT id FROM memori_entity WHERE external_id = ?)"
                 if entity_id else "")
        return self._select(
            f"SELECT e.external_id AS entity_id, f.content AS fact, "
            f"f.num_times AS mention_count, t.first_seen, t.last_seen, t.first_seeded, "
            f"t.last_seeded FROM memori_entity_fact f JOIN memori_entity e "
            f"ON e.id = f.entity_id LEFT JOIN ({_FACT_TIMES.format(where=inner)}) t "
            f"ON t.fact_id = f.id {where} "
            f"ORDER BY e.external_id, f.num_times DESC, f.content", params + params)

    def fact_sources(self, entity_id: str | None = None,
                     facts: Sequence[str] | None = None) -> pd.DataFrame:
        """Facts beside the messages that stated them: one row per (fact, source message),
        with the columns of :meth:`DuckDBStore.fact_sources` (all entities and facts unless
        ``entity_id`` / ``facts`` narrow them)."""
        # Every mention of a conversation memori_nb seeded, with its located messages if any
        # (none for an earlier version's, which did not look).
        select = ("SELECT e.external_id, f.content, l.conversation_id, s.position, s.said_at, "
                  "m.conversation_id FROM memori_entity_fact_mention m "
                  "JOIN memori_entity_fact f ON f.id = m.fact_id "
                  "JOIN memori_entity e ON e.id = f.entity_id "
                  "JOIN memori_nb_seeded_conversations l "
                  "ON l.memori_conversation_id = m.conversation_id "
                  "LEFT JOIN memori_nb_fact_sources s ON s.fact_id = m.fact_id "
                  "AND s.conversation_id = m.conversation_id")
        with self._transaction(write=False) as cursor:
            if facts is not None:
                wanted = set(facts)
                rows = [row for row in self._rows_in(
                    cursor, select + " WHERE f.uniq IN ({keys})", sorted({uniq(t) for t in wanted}))
                        if row[1] in wanted and entity_id in (None, row[0])]
            else:
                where, params = _entity_where(entity_id)
                rows = self._rows(cursor, f"{select} {where}", params)
            # A position is the message's rank in its conversation (messages are inserted
            # in order).
            conversations = sorted({row[5] for row in rows if row[3] is not None})
            ids: dict[int, list[int]] = {}
            for conversation, pk in self._rows_in(
                    cursor, "SELECT conversation_id, id FROM memori_conversation_message "
                            "WHERE conversation_id IN ({keys}) ORDER BY conversation_id, id",
                    conversations):
                ids.setdefault(conversation, []).append(pk)
            at = {(row[5], row[3]): ids[row[5]][row[3]] for row in rows
                  if row[3] is not None and row[3] < len(ids.get(row[5], ()))}
            messages = {pk: (role, content) for pk, role, content in self._rows_in(
                cursor, "SELECT id, role, content FROM memori_conversation_message "
                        "WHERE id IN ({keys})", sorted(set(at.values())))}
        records = []
        for e, fact, cid, position, said, mc in rows:
            role, content = messages.get(at.get((mc, position)), (None, None))
            records.append((e, fact, cid, position, role, said, content))
        frame = pd.DataFrame.from_records(
            records,
            columns=["entity_id", "fact", "conversation_id", "position", "role", "said_at",
                     "message"])
        frame["said_at"] = pd.to_datetime(frame["said_at"])
        frame = frame.sort_values(["entity_id", "fact", "said_at", "conversation_id",
                                   "position"], na_position="last", kind="stable")
        return with_excerpts(frame.reset_index(drop=True))

    def triples(self, entity_id: str | None = None) -> pd.DataFrame:
        """The knowledge graph: one row per (entity, subject, predicate, object)."""
        where, params = _entity_where(entity_id)
        return self._select(
            f"SELECT e.external_id AS entity_id, s.name AS subject_name, "
            f"s.type AS subject_type, p.content AS predicate, o.name AS object_name, "
            f"o.type AS object_type, k.num_times AS mention_count, k.date_last_time AS last_seen "
            f"FROM memori_knowledge_graph k JOIN memori_entity e ON e.id = k.entity_id "
            f"JOIN memori_subject s ON s.id = k.subject_id JOIN memori_predicate p "
            f"ON p.id = k.predicate_id JOIN memori_object o ON o.id = k.object_id {where} "
            f"ORDER BY e.external_id, k.num_times DESC, p.content", params)

    def entity_summaries(self) -> pd.DataFrame:
        """One row per entity: conversations, facts, mentions, triples, source time span."""
        return self._select(
            "SELECT e.external_id AS entity_id, "
            "(SELECT count(*) FROM memori_nb_seeded_conversations l WHERE l.entity_id = "
            " e.external_id AND l.memori_conversation_id IS NOT NULL) AS conversations, "
            "(SELECT count(*) FROM memori_entity_fact f WHERE f.entity_id = e.id) AS facts, "
            "(SELECT coalesce(sum(num_times), 0) FROM memori_entity_fact f "
            " WHERE f.entity_id = e.id) AS fact_mentions, "
            "(SELECT count(*) FROM memori_knowledge_graph k WHERE k.entity_id = e.id) "
            " AS triples, "
            "(SELECT min(started_at) FROM memori_nb_seeded_conversations l "
            " WHERE l.entity_id = e.external_id) AS first_message_at, "
            "(SELECT max(ended_at) FROM memori_nb_seeded_conversations l "
            " WHERE l.entity_id = e.external_id) AS last_message_at "
            "FROM memori_entity e ORDER BY e.external_id")

    # --- recall -------------------------------------------------------------------------

    def similar_facts(self, entity_id: str, query_vector: Any,
                      pool: int) -> list[tuple[str, float, Any]]:
        """(fact, similarity, date_last_time) of the ``pool`` facts of ``entity_id`` most
        similar to ``query_vector`` (a unit 384-float vector), best first.

        As Memori's recall: the entity's ``RECALL_FACTS`` most recent facts (by
        ``date_last_time``, then ``num_times``), ranked by inner product with their stored
        ``content_embedding`` (vectors of another length cannot be compared and are skipped).
        """
        import numpy as np

        from ..embeddings import EMBEDDING_DIM

        with self._transaction(write=False) as cursor:
            rows = self._rows(cursor, "SELECT f.content, f.content_embedding, f.date_last_time "
                                      "FROM memori_entity_fact f JOIN memori_entity e ON "
                                      "e.id = f.entity_id WHERE e.external_id = ? ORDER BY "
                                      "f.date_last_time DESC, f.num_times DESC, f.id DESC "
                                      "LIMIT ?", [entity_id, RECALL_FACTS])
        rows = [row for row in rows if row[1] is not None and len(row[1]) == EMBEDDING_DIM * 4]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(bytes(row[1]) for row in rows), dtype="<f4").reshape(
            len(rows), EMBEDDING_DIM)
        similarity = matrix @ np.asarray(query_vector, dtype=np.float32)
        return [(rows[i][0], float(similarity[i]), _read_time(rows[i][2]))
                for i in np.argsort(-similarity, kind="stable")[:pool]]

    def fact_details(self, entity_id: str, facts: list[str]) -> dict[str, dict[str, Any]]:
        """For each of ``facts`` of ``entity_id``: ``id`` (its ``memori_entity_fact`` row),
        ``conversations`` (the ids of the seeded conversations that stated it, earliest
        first; the app's own conversations have none), ``first_seen`` and ``last_seen``, as
        :meth:`facts` shows them."""
        with self._transaction(write=False) as cursor:
            entity = self._rows(cursor, "SELECT id FROM memori_entity WHERE external_id = ?",
                                [entity_id])
            if not entity:
                return {}
            eid = int(entity[0][0])
            times = _FACT_TIMES.format(where=f"WHERE m.entity_id = {eid}")
            rows = self._rows_in(
                cursor, "SELECT f.content, f.id, t.first_seen, t.last_seen, l.conversation_id, "
                        "l.started_at FROM memori_entity_fact f LEFT JOIN (" + times + ") t "
                        "ON t.fact_id = f.id LEFT JOIN memori_entity_fact_mention m "
                        "ON m.fact_id = f.id LEFT JOIN memori_nb_seeded_conversations l "
                        "ON l.memori_conversation_id = m.conversation_id "
                        f"WHERE f.entity_id = {eid} AND f.content IN ({{keys}})",
                sorted(set(facts)))
        details: dict[str, dict[str, Any]] = {}
        stated: dict[str, list[tuple]] = {}
        for fact, pk, first, last, conversation, started in rows:
            details.setdefault(fact, {"id": pk, "conversations": [],
                                      "first_seen": _read_time(first),
                                      "last_seen": _read_time(last)})
            if conversation is not None:
                stated.setdefault(fact, []).append((_read_time(started) is None,
                                                    _read_time(started), conversation))
        for fact, mentions in stated.items():
            # Earliest first; conversations without source times last, by id.
            mentions.sort(key=lambda m: (m[0], m[1] or datetime.min, m[2]))
            details[fact]["conversations"] = list(dict.fromkeys(c for *_, c in mentions))
        return details

    def only_entity(self) -> tuple[str | None, int]:
        """(the entity, 1) when the store holds exactly one entity; else (None, how many)."""
        with self._transaction(write=False) as cursor:
            count, first = self._rows(cursor, "SELECT count(*), min(external_id) "
                                              "FROM memori_entity")[0]
        return (first if count == 1 else None), int(count)


# Per fact: its source times over the conversations memori_nb seeded that stated it (the
# located messages' times; the conversation's span when they have none) and seeding times.
_FACT_TIMES = """SELECT m.fact_id, min(coalesce(s.first_said, l.started_at)) AS first_seen,
       max(coalesce(s.last_said, l.ended_at)) AS last_seen, min(l.seeded_at) AS first_seeded,
       max(l.seeded_at) AS last_seeded
FROM memori_entity_fact_mention m JOIN memori_nb_seeded_conversations l
     ON l.memori_conversation_id = m.conversation_id
LEFT JOIN (SELECT fact_id, conversation_id, min(said_at) AS first_said,
                  max(said_at) AS last_said
           FROM memori_nb_fact_sources GROUP BY fact_id, conversation_id) s
     ON s.fact_id = m.fact_id AND s.conversation_id = m.conversation_id
{where} GROUP BY m.fact_id"""
# A new fact, triple or attribute row is inserted with this time and a count of 0, then
# takes its count and time from its mentions in the same transaction.
_NEVER = datetime(1, 1, 1)
# Per kind of memory: its table, the mentions table linking it to conversations, the column
# there naming it.
_MENTIONS = {"facts": ("memori_entity_fact", "memori_entity_fact_mention", "fact_id"),
             "graph": ("memori_knowledge_graph", "memori_nb_triple_mentions",
                       "knowledge_graph_id"),
             "attributes": ("memori_process_attribute", "memori_nb_attribute_mentions",
                            "attribute_id")}


class _BatchWrite:
    """The rows of one batch of succeeded conversations, written through one cursor.

    Counts change by what memori_nb's own conversations add or take away, so rows the app's
    SDK wrote keep the counts it gave them.
    """

    def __init__(self, store: SqlStore, cursor: Any, run_id: str, done: list[ResultRecord],
                 vectors: dict[str, bytes]) -> None:
        # A conversation given twice in one batch (two SeedData of one entity): the last wins.
        latest = {(r.result.entity_id, r.result.conversation_id): r for r in done}
        self.store, self.cursor, self.run_id = store, cursor, run_id
        self.done = list(latest.values())
        self.vectors = vectors
        self.now = store._now()
        self.fact_ids: dict[tuple[int, str], int] = {}  # (entity, uniq) -> fact id

    def run(self) -> None:
        s = self.store
        entities = self._ids_by_key("memori_entity", "external_id",
                                    {r.result.entity_id for r in self.done})
        processes = self._ids_by_key("memori_process", "external_id",
                                     {r.process_id for r in self.done if r.process_id})
        dropped = self._forget_earlier_versions()
        conversations = self._insert_conversations(entities, processes)
        spans = [self._span(r) for r in self.done]
        seeded_at = s._now(precise=True)  # to the microsecond: already_seeded(since=)
        s._many(self.cursor, "INSERT INTO memori_nb_seeded_conversations VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (r.result.entity_id, r.result.conversation_id, r.content_hash, self.run_id, seeded_at,
             conversations[i], r.conversation.title if r.conversation else None,
             len(r.conversation.messages) if r.conversation else None, *spans[i])
            for i, r in enumerate(self.done)])
        said = {conversations[i]: spans[i][2] for i in range(len(self.done))}
        facts = self._link("memori_entity_fact", [
            (entities[r.result.entity_id], uniq(fact), fact, conversations[i])
            for i, r in enumerate(self.done) for fact in _facts_of(r)])
        self._count_in("facts", said, facts,
                       self._write_fact_sources(entities, conversations, said))
        self._count_in("graph", said, self._link_triples(entities, conversations))
        self._count_in("attributes", said, self._link("memori_process_attribute", [
            (processes[r.process_id], uniq(a), a, conversations[i])
            for i, r in enumerate(self.done) if r.process_id for a in r.extraction.attributes]))
        # What no conversation states any more goes (the SDK's own rows keep their counts).
        for kind, ids in dropped.items():
            s._rows_in(self.cursor, f"DELETE FROM {_MENTIONS[kind][0]} WHERE num_times <= 0 "
                                    f"AND id IN ({{keys}})", sorted(ids), fetch=False)

    def _span(self, record: ResultRecord) -> tuple[Any, Any, Any]:
        """(first, last message time at the source, the time facts take: last or now)."""
        said = [_utc(m.timestamp) for m in record.conversation.messages] \
            if record.conversation else []
        said = [t for t in said if t is not None]
        first, last = (min(said), max(said)) if said else (None, None)
        t = self.store._time
        return t(first), t(last), t(last) if last is not None else self.now

    def _write_fact_sources(self, entities: dict[str, int], conversations: list[int],
                            said: dict[int, Any]) -> dict[tuple[int, int], Any]:
        """Write where each fact was stated (memori_nb_fact_sources); return the source time
        of each (fact id, conversation) mention: its latest located message's, else the
        conversation's."""
        rows: dict[tuple[int, int, int], Any] = {}
        latest: dict[tuple[int, int], datetime | None] = {}
        t = self.store._time
        for i, r in enumerate(self.done):
            unique = list(dict.fromkeys(_facts_of(r)))
            if not unique:
                continue
            conversation = conversations[i]
            messages = r.conversation.messages if r.conversation is not None else ()
            located = (locate(unique, messages, dict(r.extraction.sources or ())) if messages
                       else [()] * len(unique))
            entity = entities[r.result.entity_id]
            for fact, positions in zip(unique, located):
                pk = self.fact_ids[(entity, uniq(fact))]
                stamps = [_utc(messages[p].timestamp) for p in positions]
                for p, stamp in zip(positions, stamps):
                    rows[(pk, conversation, p)] = t(stamp)
                # Two texts of one fact (same uniq) in one conversation: one mention.
                known = [stamp for stamp in stamps + [latest.get((pk, conversation))]
                         if stamp is not None]
                latest[(pk, conversation)] = max(known) if known else None
        self.store._many(self.cursor, "INSERT INTO memori_nb_fact_sources VALUES (?, ?, ?, ?)",
                         [(pk, c, p, when) for (pk, c, p), when in sorted(rows.items())])
        return {(pk, c): t(when) if when is not None else said[c]
                for (pk, c), when in latest.items()}

    def _ids_by_key(self, table: str, column: str, keys: Iterable[str]) -> dict[str, int]:
        """Insert missing rows keyed by ``column``; return every key's id."""
        keys = sorted(keys)
        if not keys:
            return {}
        s = self.store
        s._many(self.cursor, f"INSERT INTO {table} (uuid, {column}) VALUES (?, ?) "
                             f"ON CONFLICT ({column}) DO NOTHING",
                [(str(uuid.uuid4()), key) for key in keys])
        rows = s._rows_in(self.cursor, f"SELECT {column}, id FROM {table} WHERE {column} IN "
                                       f"({{keys}})", keys)
        return {key: pk for key, pk in rows}

    def _forget_earlier_versions(self) -> dict[str, set[int]]:
        """Remove what earlier seedings of these conversations wrote (a forced or changed
        conversation replaces its old version), taking their mentions off the counts; return
        the rows whose counts went down, per kind."""
        s, cursor = self.store, self.cursor
        keys = sorted({(r.result.entity_id, r.result.conversation_id) for r in self.done})
        old = [row[0] for row in s._rows_in(
            cursor, "SELECT memori_conversation_id FROM memori_nb_seeded_conversations WHERE "
                    "memori_conversation_id IS NOT NULL AND (entity_id, conversation_id) IN "
                    "({keys})", keys, width=2)]
        dropped: dict[str, set[int]] = {kind: set() for kind in _MENTIONS}
        if old:
            for kind, (table, mentions, column) in _MENTIONS.items():
                gone = Counter(row[0] for row in s._rows_in(
                    cursor, f"SELECT {column} FROM {mentions} WHERE conversation_id IN "
                            f"({{keys}})", old))
                s._many(cursor, f"UPDATE {table} SET num_times = num_times - ? WHERE id = ?",
                        [(n, pk) for pk, n in sorted(gone.items())])
                dropped[kind] = set(gone)
            sessions = [row[0] for row in s._rows_in(
                cursor, "SELECT session_id FROM memori_conversation WHERE id IN ({keys})", old)]
            # Children first: SQLite enforces no foreign keys unless asked to.
            for table, column, ids in (
                    ("memori_entity_fact_mention", "conversation_id", old),
                    ("memori_nb_fact_sources", "conversation_id", old),
                    ("memori_nb_triple_mentions", "conversation_id", old),
                    ("memori_nb_attribute_mentions", "conversation_id", old),
                    ("memori_conversation_message", "conversation_id", old),
                    ("memori_conversation", "id", old), ("memori_session", "id", sessions)):
                s._rows_in(cursor, f"DELETE FROM {table} WHERE {column} IN ({{keys}})", ids,
                           fetch=False)
        s._rows_in(cursor, "DELETE FROM memori_nb_seeded_conversations WHERE "
                           "(entity_id, conversation_id) IN ({keys})", keys, width=2, fetch=False)
        # Their chunk progress is of no more use, whatever content it was for.
        s._rows_in(cursor, "DELETE FROM memori_nb_partial_conversations WHERE "
                           "(entity_id, conversation_id) IN ({keys})", keys, width=2, fetch=False)
        return dropped

    def _insert_conversations(self, entities: dict[str, int],
                              processes: dict[str, int]) -> list[int]:
        """A session, conversation (with summary) and messages per record; conversation ids."""
        s, cursor = self.store, self.cursor
        session_uuids = [str(uuid.uuid4()) for _ in self.done]
        s._many(cursor, "INSERT INTO memori_session (uuid, entity_id, process_id) "
                        "VALUES (?, ?, ?)",
                [(u, entities[r.result.entity_id], processes.get(r.process_id))
                 for u, r in zip(session_uuids, self.done)])
        sessions = dict(s._rows_in(cursor, "SELECT uuid, id FROM memori_session WHERE uuid IN "
                                           "({keys})", session_uuids))
        conversation_uuids = [str(uuid.uuid4()) for _ in self.done]
        s._many(cursor, "INSERT INTO memori_conversation (uuid, session_id, summary) "
                        "VALUES (?, ?, ?)",
                [(u, sessions[su], r.extraction.summary)
                 for u, su, r in zip(conversation_uuids, session_uuids, self.done)])
        ids = dict(s._rows_in(cursor, "SELECT uuid, id FROM memori_conversation WHERE uuid IN "
                                      "({keys})", conversation_uuids))
        conversations = [ids[u] for u in conversation_uuids]
        s._many(cursor, "INSERT INTO memori_conversation_message (uuid, conversation_id, role, "
                        "type, content) VALUES (?, ?, ?, NULL, ?)",
                [(str(uuid.uuid4()), conversations[i], m.role, m.content)
                 for i, r in enumerate(self.done) if r.conversation is not None
                 for m in r.conversation.messages])
        return conversations

    def _link(self, table: str, rows: list[tuple[int, str, str, int]]) -> set[tuple[int, int]]:
        """Insert missing facts or attributes (owner id, uniq, text, conversation) and a
        mention per (row, conversation); return those (row id, conversation) pairs."""
        if not rows:
            return set()
        s, cursor = self.store, self.cursor
        owner = "entity_id" if table == "memori_entity_fact" else "process_id"
        # Inserted and counted in key order, in every batch: workers writing the same new
        # rows at once wait for one another in one order, never in a circle (a deadlock).
        new = {(o, u): text for o, u, text, _ in rows}
        never = self.store._time(_NEVER)
        if table == "memori_entity_fact":
            s._many(cursor, "INSERT INTO memori_entity_fact (uuid, entity_id, content, "
                            "content_embedding, num_times, date_last_time, uniq) "
                            "VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (entity_id, uniq) "
                            "DO NOTHING",
                    [(str(uuid.uuid4()), o, text, self.vectors[text], never, u)
                     for (o, u), text in sorted(new.items()) if text in self.vectors])
        else:
            s._many(cursor, "INSERT INTO memori_process_attribute (uuid, process_id, content, "
                            "num_times, date_last_time, uniq) VALUES (?, ?, ?, 0, ?, ?) "
                            "ON CONFLICT (process_id, uniq) DO NOTHING",
                    [(str(uuid.uuid4()), o, text, never, u)
                     for (o, u), text in sorted(new.items())])
        ids = {(o, u): pk for o, u, pk in s._rows_in(
            cursor, f"SELECT {owner}, uniq, id FROM {table} WHERE ({owner}, uniq) IN ({{keys}})",
            list(new), width=2)}
        if table == "memori_entity_fact":
            self.fact_ids = ids
        mentions = {(ids[(o, u)], c, o) for o, u, _, c in rows}
        if table == "memori_entity_fact":
            s._many(cursor, "INSERT INTO memori_entity_fact_mention (uuid, entity_id, fact_id, "
                            "conversation_id) VALUES (?, ?, ?, ?)",
                    [(str(uuid.uuid4()), o, f, c) for f, c, o in sorted(mentions)])
        else:
            s._many(cursor, "INSERT INTO memori_nb_attribute_mentions VALUES (?, ?)",
                    sorted({(a, c) for a, c, _ in mentions}))
        return {(pk, c) for pk, c, _ in mentions}

    def _link_triples(self, entities: dict[str, int],
                      conversations: list[int]) -> set[tuple[int, int]]:
        s, cursor = self.store, self.cursor
        parts: dict[str, dict[str, tuple]] = {"memori_subject": {}, "memori_predicate": {},
                                              "memori_object": {}}
        rows = []
        for i, r in enumerate(self.done):
            for t in r.extraction.triples:
                # Types lower-cased, as the SDK stores them.
                subject = (t.subject_name[:MAX_NAME], t.subject_type.lower()[:MAX_NAME])
                obj = (t.object_name[:MAX_NAME], t.object_type.lower()[:MAX_NAME])
                keys = (uniq(*subject), uniq(t.predicate), uniq(*obj))
                parts["memori_subject"][keys[0]] = subject
                parts["memori_predicate"][keys[1]] = (t.predicate,)
                parts["memori_object"][keys[2]] = obj
                rows.append((entities[r.result.entity_id], *keys, conversations[i]))
        if not rows:
            return set()
        ids: dict[str, dict[str, int]] = {}
        for table, values in parts.items():
            columns = "content" if table == "memori_predicate" else "name, type"
            marks = "?" if table == "memori_predicate" else "?, ?"
            s._many(cursor, f"INSERT INTO {table} (uuid, {columns}, uniq) VALUES (?, {marks}, ?) "
                            f"ON CONFLICT (uniq) DO NOTHING",
                    [(str(uuid.uuid4()), *value, key) for key, value in sorted(values.items())])
            ids[table] = dict(s._rows_in(cursor, f"SELECT uniq, id FROM {table} WHERE uniq IN "
                                                 f"({{keys}})", list(values)))
        graph_keys = sorted({(e, ids["memori_subject"][su], ids["memori_predicate"][pu],
                              ids["memori_object"][ou]) for e, su, pu, ou, _ in rows})
        never = self.store._time(_NEVER)
        s._many(cursor, "INSERT INTO memori_knowledge_graph (uuid, entity_id, subject_id, "
                        "predicate_id, object_id, num_times, date_last_time) "
                        "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT (entity_id, subject_id, "
                        "predicate_id, object_id) DO NOTHING",
                [(str(uuid.uuid4()), *key, never) for key in graph_keys])
        graph = {tuple(row[:4]): row[4] for row in s._rows_in(
            cursor, "SELECT entity_id, subject_id, predicate_id, object_id, id FROM "
                    "memori_knowledge_graph WHERE (entity_id, subject_id, predicate_id, "
                    "object_id) IN ({keys})", graph_keys, width=4)}
        mentions = {(graph[(e, ids["memori_subject"][su], ids["memori_predicate"][pu],
                            ids["memori_object"][ou])], c) for e, su, pu, ou, c in rows}
        s._many(cursor, "INSERT INTO memori_nb_triple_mentions VALUES (?, ?)", sorted(mentions))
        return mentions

    def _count_in(self, kind: str, said: dict[int, Any], mentions: set[tuple[int, int]],
                  times: dict[tuple[int, int], Any] | None = None) -> None:
        """Add each new mention to its row's count; its time becomes the latest source time
        of the conversations that stated it (of the mention, in ``times``, when given)."""
        if not mentions:
            return
        added: Counter = Counter()
        latest: dict[int, Any] = {}
        for pk, conversation in mentions:
            added[pk] += 1
            when = times[(pk, conversation)] if times else said[conversation]
            if pk not in latest or when > latest[pk]:
                latest[pk] = when
        table = _MENTIONS[kind][0]
        self.store._many(self.cursor, f"UPDATE {table} SET num_times = num_times + ?, "
                                      f"date_last_time = CASE WHEN date_last_time < ? THEN ? "
                                      f"ELSE date_last_time END WHERE id = ?",
                         [(n, latest[pk], latest[pk], pk) for pk, n in sorted(added.items())])


def _token_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Token counts as integers with NULL as <NA> (as DuckDB's frames have them), not floats."""
    for column in ("prompt_tokens", "completion_tokens"):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    return frame


def _entity_where(entity_id: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameter) that keeps one entity's rows, or all."""
    return ("WHERE e.external_id = ?", [entity_id]) if entity_id else ("", [])


def _utc(value: Any) -> datetime | None:
    """A message time as aware UTC; None for anything that is not a datetime."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _read_time(value: Any) -> datetime | None:
    """A time as read back: SQLite's text as a datetime; PostgreSQL's datetime as it is."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _succeeded(records: list[ResultRecord]) -> list[ResultRecord]:
    """The records whose memories are stored: succeeded, with an extraction."""
    return [r for r in records if r.result.success and r.extraction is not None]


def _facts_of(record: ResultRecord) -> tuple[str, ...]:
    return record.extraction.facts if record.extraction is not None else ()


def _db_problem(exc: BaseException) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return "text with characters no database can store (a lone surrogate)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "thread" in text and "SQLite objects" in text:
        return ("an in-memory sqlite3 connection can only be used from the thread that "
                "made it; seed into a file (sqlite:///memori.db) instead")
    return f"{type(exc).__name__}: {text}"


def _is_db_error(exc: BaseException) -> bool:
    """A DB-API error from any driver (they share the name, not a base class)."""
    return any(cls.__name__ in ("DatabaseError", "InterfaceError", "Error")
               and cls.__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2")
               for cls in type(exc).__mro__)
