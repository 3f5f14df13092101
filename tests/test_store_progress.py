"""What both stores keep so a run can stop anywhere: chunk-level progress of a conversation
stopped in the middle (``save_partial`` / ``partials``), and runs left ``running`` by a
process that died (kill -9) shown as ``unfinished``. On DuckDB, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from helpers import triple

from memori_nb.errors import StoreError
from memori_nb.models import ConversationResult, Extraction, SeedConfig, SeedCounters
from memori_nb.stores import DuckDBStore, ResultRecord
from memori_nb.stores.base import PartialRecord, this_process

ROOT = Path(__file__).resolve().parents[1]
HOST, _ = this_process()  # the hostname, and a container's PID namespace
KINDS = ["duckdb", "sqlite", "postgresql"]


class NoEmbedder:
    """These tests store no facts, so nothing is embedded."""

    def embed_bytes(self, texts):
        raise AssertionError(f"nothing should be embedded: {texts}")


def target(kind: str, request, tmp_path) -> str:
    """A database of ``kind``: a DuckDB path, or a SQLAlchemy URL."""
    if kind == "duckdb":
        return str(tmp_path / "memori.duckdb")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'memori.db'}"
    pytest.importorskip("sqlalchemy")
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)


def open_target(where: str):
    if where.endswith(".duckdb"):
        return DuckDBStore(where)
    from memori_nb.stores import SqlStore

    return SqlStore(where, embedder=NoEmbedder())


@pytest.fixture(params=KINDS)
def where(request, tmp_path) -> str:
    return target(request.param, request, tmp_path)


@pytest.fixture
def store(where):
    store = open_target(where)
    store.build()
    yield store
    store.close()


def partial(cid="c1", chunks_done=2, content_hash="h1", **extraction) -> PartialRecord:
    extraction = Extraction(**({"triples": (triple("tea"),), "facts": ("user likes tea",),
                                "summary": "talked about tea", "attributes": ("patient",)}
                               | extraction))
    return PartialRecord(entity_id="u1", process_id="bot", conversation_id=cid,
                         content_hash=content_hash, chunks_done=chunks_done, chunk_count=5,
                         summary=extraction.summary, extraction=extraction)


def record(cid: str, status: str, content_hash: str = "h1") -> ResultRecord:
    result = ConversationResult(conversation_id=cid, entity_id="u1", status=status,
                                chunks_processed=5 if status == "succeeded" else 0)
    extraction = Extraction(summary="s") if status == "succeeded" else None
    return ResultRecord(result, content_hash, "bot", extraction)


# --- chunk-level progress -----------------------------------------------------------------


def test_partial_progress_round_trips_and_is_replaced_by_a_later_save(store):
    saved = partial(triples=(triple("tea"), triple("jazz")), summary=None, attributes=())
    store.save_partial("r1", saved)
    assert store.partials([saved.key, ("u1", "c1", "other content"), ("u2", "c1", "h1")]) \
        == {saved.key: saved}
    later = partial(chunks_done=4, summary="tea, then jazz")
    store.save_partial("r2", later)
    assert store.partials([saved.key]) == {saved.key: later}
    assert store.partials([]) == {}


def test_a_succeeded_conversation_drops_its_partial_progress_in_the_same_write(store):
    store.save_partial("r1", partial("c1"))
    store.save_partial("r1", partial("c1", content_hash="old content"))
    store.save_partial("r1", partial("c2"))
    store.save_partial("r1", partial("c3"))
    store.write("r2", [record("c1", "succeeded"), record("c2", "failed"),
                       record("c3", "skipped")])
    keys = [("u1", c, h) for c in ("c1", "c2", "c3") for h in ("h1", "old content")]
    # c1 succeeded: no progress is kept for it, for any content; c2 and c3 keep theirs.
    assert sorted(store.partials(keys)) == [("u1", "c2", "h1"), ("u1", "c3", "h1")]


def test_a_failed_write_keeps_the_partial_progress(store):
    store.save_partial("r1", partial("c1"))
    # A ledger row without a content hash breaks a NOT NULL key: the write fails midway.
    bad = ResultRecord(ConversationResult(conversation_id="c1", entity_id="u1",
                                          status="succeeded"), None, "bot", Extraction())
    with pytest.raises(StoreError):
        store.write("r2", [bad])
    assert list(store.partials([("u1", "c1", "h1")])) == [("u1", "c1", "h1")]


# --- runs left by a dead process ------------------------------------------------------------


def runs(store) -> dict[str, tuple]:
    frame = store.runs()
    def value(x):
        return None if pd.isna(x) else x
    return {row.run_id: (row.status, value(row.host), None if pd.isna(row.pid) else int(row.pid),
                         value(row.stopped_reason)) for row in frame.itertuples()}


def test_a_run_records_the_process_running_it(store):
    store.start_run("r1", backend="local", config=SeedConfig(), force=False)
    assert runs(store)["r1"] == ("running", HOST, os.getpid(), None)
    store.build()  # this process is alive and started it: still running
    assert runs(store)["r1"][0] == "running"
    store.finish_run("r1", status="completed", counters=SeedCounters(total=0),
                     duration_ms=1.0, stopped_reason=None)
    assert runs(store)["r1"][0] == "completed"


def test_a_run_in_a_container_records_its_pid_namespace_with_the_hostname(store,
                                                                          monkeypatch):
    """Containers sharing a hostname (host networking) each have their own PIDs: a run
    records its namespace, so another container takes it for another host's run rather
    than find its pid dead and mark it unfinished."""
    readlink = os.readlink
    monkeypatch.setattr(os, "readlink", lambda path: "pid:[4026532577]"
                        if path == "/proc/self/ns/pid" else readlink(path))
    store.start_run("boxed", backend="local", config=SeedConfig(), force=False)
    assert runs(store)["boxed"][1] == f"{socket.gethostname()}/pid:[4026532577]"


CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {tests!r}]
    from memori_nb.models import SeedConfig
    from test_store_progress import open_target
    store = open_target({where!r})
    store.build()
    store.start_run("crashed", backend="local", config=SeedConfig(), force=False)
    print("started", flush=True)
    time.sleep(120)
""")


def test_a_run_whose_process_was_killed_shows_as_unfinished(where):
    # A real process starts a run, its store still open, and is killed with SIGKILL:
    # nothing of it can clean up.
    script = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), where=where)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "started"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = open_target(where)
    store.build()
    assert runs(store)["crashed"] == (
        "unfinished", HOST, child.pid,
        f"process {child.pid} on {HOST} ended before the run finished "
        f"(killed or crashed)")
    store.close()


def test_only_runs_whose_process_is_gone_from_this_host_are_marked(store):
    insert = ("INSERT INTO {table} (run_id, status, host, pid) VALUES "
              "('{run}', 'running', {host}, {pid})")
    table = "runs" if isinstance(store, DuckDBStore) else "memori_nb_runs"
    here = f"'{HOST}'"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A container sharing this hostname (host networking) with its own PID namespace.
        container = f"'{socket.gethostname()}/pid:[1]'"
        for run, host, pid in (("elsewhere", "'some-other-host'", dead),
                               ("other-container", container, dead),
                               ("old-row", "NULL", "NULL"),
                               ("alive", here, alive.pid),
                               ("dead", here, dead),
                               ("reused-pid", here, os.getpid())):
            store.sql(insert.format(table=table, run=run, host=host, pid=pid))
        store.build()
    finally:
        alive.kill()
        alive.wait()
    status = {run: values[0] for run, values in runs(store).items()}
    # Another host's process cannot be checked, nor another PID namespace's; a row from
    # before pids were kept neither. This process's pid on a run it did not start: a
    # restarted container reuses pids.
    assert status == {"elsewhere": "running", "other-container": "running",
                      "old-row": "running", "alive": "running", "dead": "unfinished",
                      "reused-pid": "unfinished"}


def test_a_runs_table_from_before_gets_the_process_columns(tmp_path):
    import duckdb
    import sqlite3

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, "
                     "finished_at TIMESTAMP, status VARCHAR, backend VARCHAR, force BOOLEAN, "
                     "config JSON, total BIGINT, successful BIGINT, failed BIGINT, "
                     "skipped BIGINT, retries BIGINT, total_triples BIGINT, "
                     "duration_ms DOUBLE, stopped_reason VARCHAR)")
        conn.execute("INSERT INTO runs (run_id, status) VALUES ('old', 'running')")
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE memori_nb_runs (run_id TEXT PRIMARY KEY, started_at TEXT, "
                     "finished_at TEXT, status TEXT, backend TEXT, force INTEGER, config TEXT, "
                     "total INTEGER, successful INTEGER, failed INTEGER, skipped INTEGER, "
                     "retries INTEGER, total_triples INTEGER, duration_ms REAL, "
                     "stopped_reason TEXT)")
        conn.execute("INSERT INTO memori_nb_runs (run_id, status) VALUES ('old', 'running')")
    for where in (str(path), f"sqlite:///{db}"):
        store = open_target(where)
        store.build()
        store.build()  # idempotent
        store.start_run("new", backend="local", config=SeedConfig(), force=False)
        assert runs(store) == {"old": ("running", None, None, None),
                               "new": ("running", HOST, os.getpid(), None)}
        store.close()


def test_an_entity_with_only_partial_progress_counts_as_seen(store):
    # The engine skips ledger look-ups for entities it has never seen: one whose only
    # conversation stopped midway must still be looked up, to find its progress.
    assert store.ledger_is_empty()
    store.save_partial("r1", partial("c1"))
    assert not store.ledger_is_empty()
    assert store.seeded_entities({"u1", "u2"}) == {"u1"}
    store.write("r2", [record("c1", "succeeded")])
    assert store.seeded_entities({"u1", "u2"}) == {"u1"}  # now from the ledger
