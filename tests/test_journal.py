"""The write-ahead journal: after kill -9, a full disk or a crash, the next run stores what the
dead run finished and bills again at most what was in flight."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from helpers import API_KEY, conversation
from memori_nb import Memori, SeedConfig, SeedData
from memori_nb.models import Conversation, ConversationResult, Extraction, Message
from memori_nb.stores import DuckDBStore
from memori_nb.stores.base import PartialRecord, ResultRecord
from memori_nb.stores.journal import Journal, JournalError, journal_beside
from memori_nb.stores.writer import BatchWriter
from memori_nb.testing import AugmentationServer

ROOT = Path(__file__).resolve().parents[1]
BATCH = 10


def first_message(body: dict) -> str:
    """Which request this is: the first message is unique per conversation and chunk."""
    return body["conversation"]["messages"][0]["content"]


def sent(server: AugmentationServer, since: int = 0) -> list[str]:
    return [first_message(r.body) for r in server.requests[since:] if r.body]


def varied_conversations(n: int) -> list[dict]:
    """Sizes from one short line to a few kilobytes, odd characters included."""
    return [conversation(f"c{i}", f"I live in City{i}. " + "Ünïcode ✓ 寿司 " * (i % 7) * 30,
                         "Noted." * (i % 5 + 1), f"My dog is called Rex{i}.")
            for i in range(n)]


def write_script(tmp_path: Path, conversations: list[dict], config: str = "") -> Path:
    """A seeding run in its own process (so that it can be killed), into m.duckdb."""
    (tmp_path / "input.json").write_text(json.dumps(conversations))
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, os
        from memori_nb import Memori, SeedConfig, SeedData
        conversations = json.load(open({str(tmp_path / "input.json")!r}))
        m = Memori(conn={str(tmp_path / "m.duckdb")!r}, backend="memori",
                   api_key=os.environ["KEY"], base_url=os.environ["URL"])
        result = asyncio.run(m.seed(SeedData.for_conversations(
            entity_id="u1", conversations=conversations),
            SeedConfig(batch_size={BATCH}, {config})))
        print(result.successful, result.skipped)
    """))
    return script


def start(script: Path, server: AugmentationServer) -> subprocess.Popen:
    env = {**os.environ, "KEY": API_KEY, "URL": server.url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_cli(tmp_path: Path, server: AugmentationServer,
              file_size_limit: int | None = None) -> subprocess.Popen:
    """The CLI on seed.json; past ``file_size_limit`` bytes a file cannot grow, as on a full
    disk (the write fails with EFBIG)."""
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {**os.environ, "MEMORI_API_KEY": API_KEY, "MEMORI_API_URL_BASE": server.url,
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "memori_nb", "seed", str(tmp_path / "seed.json"), "--db", str(tmp_path / "m.duckdb"), "--batch-size", str(BATCH)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=limit_file_size if file_size_limit else None)


def kill_after(proc: subprocess.Popen, server: AugmentationServer, requests: int) -> None:
    deadline = time.monotonic() + 60
    while server.request_count < requests:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settle(server)


def settle(server: AugmentationServer) -> None:
    """Wait until the server has counted every request of a killed client."""
    deadline = time.monotonic() + 10
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def ledger(tmp_path: Path) -> int:
    with duckdb.connect(str(tmp_path / "m.duckdb")) as conn:
        return conn.execute("SELECT count(*) FROM seeded_conversations").fetchone()[0]


@pytest.mark.parametrize("kill_at", [25, 90])
def test_after_kill_9_the_rerun_bills_again_only_what_was_in_flight(tmp_path, kill_at):
    script = write_script(tmp_path, varied_conversations(150))
    with AugmentationServer(api_key=API_KEY, latency=0.03) as server:
        kill_after(start(script, server), server, kill_at)
        first = server.request_count
        rerun = start(script, server)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        twice = set(sent(server, 0)[:first]) & set(sent(server, first))
    assert len(twice) <= BATCH
    assert ledger(tmp_path) == 150
    # The journal is gone once its contents are in the store.
    assert not journal_beside(str(tmp_path / "m.duckdb")).exists()


def test_after_kill_9_a_chunked_conversation_resumes_at_the_next_chunk(tmp_path):
    # Two conversations of 30 messages, 3 per request: 10 chunks each, sent in order.
    conversations = [conversation(f"long{k}", *[f"Turn {k}-{i}: I like item {k}-{i}."
                                                for i in range(30)]) for k in range(2)]
    script = write_script(tmp_path, conversations, "max_messages_per_request=3")
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        kill_after(start(script, server), server, 12)
        first = server.request_count
        rerun = start(script, server)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        twice = set(sent(server, 0)[:first]) & set(sent(server, first))
        total = server.request_count
    assert len(twice) <= 2  # one request in flight per conversation
    assert total - len(twice) == 20  # every chunk paid for once, but what was in flight
    m = Memori(conn=str(tmp_path / "m.duckdb"))
    facts = m.facts(entity_id="u1").fact.tolist()
    # Each user turn states a fact: none of those the first run paid for is missing.
    assert sum("item" in fact for fact in facts) == 30
    m.close()


def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_loses_nothing(tmp_path):
    (tmp_path / "seed.json").write_text(json.dumps({
        "entity_id": "u1", "conversations": varied_conversations(200)}))
    with AugmentationServer(api_key=API_KEY, latency=0.02) as server:
        failing = start_cli(tmp_path, server, file_size_limit=400_000)
        out, err = failing.communicate(timeout=120)
        settle(server)
        first = server.request_count
        rerun = start_cli(tmp_path, server)
        rerun.communicate(timeout=120)
        twice = set(sent(server, 0)[:first]) & set(sent(server, first))
    assert failing.returncode == 1, err
    last = err.strip().splitlines()[-1]
    # Whichever file reaches the limit first, the journal or the database, is named.
    assert last.startswith("error: the run stopped because ") and "cannot be written" in last
    assert "File too large" in last or "No space left" in last, err
    assert "Traceback" not in err
    assert len(twice) <= BATCH, f"{len(twice)} billed twice"
    assert ledger(tmp_path) == 200


# --- replaying a journal, in this process ---------------------------------------------------

SAID = datetime(2024, 3, 5, 14, 30, tzinfo=timezone.utc)


def finished_record(cid: str, fact: str) -> ResultRecord:
    conv = Conversation(id=cid, title="Moving", messages=(
        Message(role="user", content=f"{fact} ✓ 寿司 \u2028", timestamp=SAID),
        Message(role="assistant", content="Noted.")))
    extraction = Extraction(facts=(fact,), summary=f"talked about {fact}")
    result = ConversationResult(conversation_id=cid, entity_id="u1", status="succeeded",
                                triples_count=0, summary=extraction.summary,
                                warnings=("a warning",))
    return ResultRecord(result, conv.content_hash(), None, extraction, conv)


def dead_run(db: Path, *records: ResultRecord, run_id: str = "deadrun",
             torn: bytes = b"") -> Path:
    """A journal as a killed run leaves it: files in place, its lock free."""
    journal = Journal(journal_beside(str(db)), run_id)
    for record in records:
        journal.finished(record)
    path = journal._segments[-1]
    journal.close(delete=False)
    with open(path, "ab") as segment:
        segment.write(torn)
    return path


def seed_with_server(db: Path, conversations: list[dict], server: AugmentationServer):
    m = Memori(conn=str(db), backend="memori", api_key=API_KEY, base_url=server.url)
    try:
        return asyncio.run(m.seed(SeedData.for_conversations(
            entity_id="u1", conversations=conversations)))
    finally:
        m.close()


def as_input(record: ResultRecord) -> dict:
    return {"id": record.result.conversation_id, "title": "Moving", "messages": [
        {"role": m.role, "content": m.content,
         **({"timestamp": m.timestamp.isoformat()} if m.timestamp else {})}
        for m in record.conversation.messages]}


def test_a_dead_runs_journal_is_stored_before_the_ledger_is_read(tmp_path):
    db = tmp_path / "m.duckdb"
    DuckDBStore(str(db)).build()
    record = finished_record("c1", "user lives in Lisbon")
    dead_run(db, record, torn=b'{"done":{"result":{"conv')  # the last line, cut by the kill
    with AugmentationServer(api_key=API_KEY) as server:
        result = seed_with_server(db, [as_input(record), conversation("c2", "I am a nurse.")],
                                  server)
        assert sent(server) == ["I am a nurse."]  # c1 was paid for by the dead run
    assert result.results[0].status == "skipped"
    with duckdb.connect(str(db)) as conn:
        assert conn.execute("SELECT run_id, status, warnings FROM conversation_results "
                            "WHERE conversation_id = 'c1' ORDER BY finished_at").fetchall() == [
            ("deadrun", "succeeded", ["a warning"]), (result.run_id, "skipped", [])]
        assert conn.execute("SELECT content, said_at FROM messages WHERE conversation_id = "
                            "'c1' ORDER BY position").fetchall() == [
            ("user lives in Lisbon ✓ 寿司 \u2028", SAID.replace(tzinfo=None)), ("Noted.", None)]
        assert conn.execute("SELECT summary FROM conversation_summaries WHERE "
                            "conversation_id = 'c1'").fetchall() == [
            ("talked about user lives in Lisbon",)]
    assert not journal_beside(str(db)).exists()


def test_a_live_runs_journal_is_left_alone(tmp_path):
    db = tmp_path / "m.duckdb"
    DuckDBStore(str(db)).build()
    live = Journal(journal_beside(str(db)), "liverun")  # holds its lock, as a live run does
    live.finished(finished_record("c1", "user lives in Lisbon"))
    try:
        with AugmentationServer(api_key=API_KEY) as server:
            seed_with_server(db, [conversation("c2", "I am a nurse.")], server)
        assert live._segments[-1].exists()
        assert ledger(tmp_path) == 1
    finally:
        live.close(delete=True)


def test_a_journal_folder_removed_by_another_run_while_replay_looks_is_nothing_to_replay(
        tmp_path):
    """Workers on one machine share a store's journal folder; the last run to end removes
    it, empty, maybe just after another's replay saw it there."""
    from memori_nb.stores.journal import replay

    class RemovedMeanwhile(type(Path())):
        def is_dir(self) -> bool:
            return True  # it was, a moment ago

    store = DuckDBStore(str(tmp_path / "m.duckdb"))
    store.build()
    assert replay(RemovedMeanwhile(tmp_path / "gone.memori_nb-journal"), store) == 0
    store.close()


def test_replaying_what_the_store_already_has_changes_nothing(tmp_path):
    db = tmp_path / "m.duckdb"
    record = finished_record("c1", "user lives in Lisbon")
    store = DuckDBStore(str(db))
    store.build()
    store.write("deadrun", [record])  # the write committed; the kill came after it
    store.close()
    dead_run(db, record)
    with AugmentationServer(api_key=API_KEY) as server:
        seed_with_server(db, [conversation("c2", "I am a nurse.")], server)
    with duckdb.connect(str(db)) as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE conversation_id = 'c1'"
                            ).fetchone()[0] == 2
        assert conn.execute("SELECT mention_count FROM facts WHERE fact = "
                            "'user lives in Lisbon'").fetchall() == [(1,)]


def test_a_dead_runs_chunk_progress_is_resumed_from(tmp_path):
    db = tmp_path / "m.duckdb"
    DuckDBStore(str(db)).build()
    texts = [f"Turn {i}: I like item {i}." for i in range(6)]
    raw = conversation("long", *texts)
    parsed = Conversation(id="long", messages=tuple(
        Message(role=m["role"], content=m["content"]) for m in raw["messages"]))
    journal = Journal(journal_beside(str(db)), "deadrun")
    journal.chunk_done(PartialRecord(
        entity_id="u1", process_id=None, conversation_id="long",
        content_hash=parsed.content_hash(), chunks_done=2, chunk_count=3,
        summary="so far", extraction=Extraction(facts=("user likes item 0",))))
    journal.close(delete=False)
    with AugmentationServer(api_key=API_KEY) as server:
        m = Memori(conn=str(db), backend="memori", api_key=API_KEY, base_url=server.url)
        result = asyncio.run(m.seed(SeedData.for_conversations(
            entity_id="u1", conversations=[raw]), SeedConfig(max_messages_per_request=2)))
        assert sent(server) == ["Turn 4: I like item 4."]  # only the third chunk
        assert server.requests[0].body["conversation"]["summary"] == "so far"
    assert result.successful == 1
    assert "user likes item 0" in m.facts(entity_id="u1").fact.tolist()
    m.close()


def test_a_run_that_cannot_create_its_journal_says_where_before_sending(tmp_path):
    db = tmp_path / "m.duckdb"
    DuckDBStore(str(db)).build()
    journal_beside(str(db)).write_text("a file where the journal directory goes")
    with AugmentationServer(api_key=API_KEY) as server:
        with pytest.raises(Exception, match="cannot write the journal at .*memori_nb-journal"):
            seed_with_server(db, [conversation("c1", "I am a nurse.")], server)
        assert server.request_count == 0


def test_each_store_has_its_own_journal_directory(tmp_path, monkeypatch, postgres_server):
    pytest.importorskip("sqlalchemy")
    from memori_nb.stores.sql import SqlStore

    assert DuckDBStore(":memory:").journal_dir() is None
    assert DuckDBStore(str(tmp_path / "m.duckdb")).journal_dir() == journal_beside(
        str(tmp_path / "m.duckdb"))
    sqlite = SqlStore(f"sqlite:///{tmp_path / 'm.db'}", embedder=object())
    sqlite.build()
    assert sqlite.journal_dir() == journal_beside(str(tmp_path / "m.db"))
    # A server's databases journal in the user's cache, one directory per database.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    names = [postgres_server.create_database() for _ in range(2)]
    try:
        dirs = []
        for name in [*names, names[0]]:
            store = SqlStore(postgres_server.url(name), embedder=object())
            store.build()
            dirs.append(store.journal_dir())
            store.close()
        assert dirs[0] == dirs[2] != dirs[1]
        assert dirs[0].parent == tmp_path / "cache" / "memori_nb" / "journal"
    finally:
        for name in names:
            postgres_server.drop_database(name)


def test_a_dead_runs_journal_reaches_memoris_own_tables(tmp_path):
    pytest.importorskip("onnxruntime")
    import sqlite3

    db = tmp_path / "m.db"
    m = Memori(conn=f"sqlite:///{db}")
    m.config.storage.build()
    record = finished_record("c1", "user lives in Lisbon")
    dead_run(db, record)
    with AugmentationServer(api_key=API_KEY) as server:
        m = Memori(conn=f"sqlite:///{db}", backend="memori", api_key=API_KEY,
                   base_url=server.url)
        result = asyncio.run(m.seed(SeedData.for_conversations(
            entity_id="u1", conversations=[as_input(record)])))
        assert server.request_count == 0
    m.close()
    assert result.skipped == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT content FROM memori_entity_fact").fetchall() == [
            ("user lives in Lisbon",)]
        assert conn.execute("SELECT count(*) FROM memori_conversation_message"
                            ).fetchone()[0] == 2


def test_a_record_comes_back_from_the_journal_as_it_went_in(tmp_path):
    import numpy as np
    import pandas as pd

    times = [SAID, pd.Timestamp("2024-03-05 14:30:00.123456", tz="UTC"), pd.NaT,
             "5 March 2024", 1709649000, np.datetime64("2024-03-05T14:30:00"), None]
    conv = Conversation(id="c1", title=None, messages=tuple(
        Message(role="user", content=f"lone \ud800 surrogate, 寿司, {i}", timestamp=t)
        for i, t in enumerate(times)))
    record = ResultRecord(ConversationResult(conversation_id="c1", entity_id="u1",
                                             status="succeeded"), conv.content_hash(), "bot",
                          Extraction(facts=("user likes sushi",)), conv)
    dead_run(tmp_path / "m.duckdb", record)
    from memori_nb.stores.journal import _read_segments
    finished, _ = _read_segments(sorted(journal_beside(str(tmp_path / "m.duckdb")).glob("*.jsonl")))
    back = finished["u1", "c1", conv.content_hash()]
    assert [m.content for m in back.conversation.messages] == [
        m.content for m in conv.messages]
    assert [m.timestamp for m in back.conversation.messages] == [
        SAID, pd.Timestamp("2024-03-05 14:30:00.123456", tz="UTC"), None, "5 March 2024",
        1709649000, "2024-03-05T14:30:00", None]
    assert back.extraction == record.extraction and back.process_id == "bot"


def test_an_unreadable_journal_line_costs_its_conversation_not_the_next_runs(tmp_path):
    db = tmp_path / "m.duckdb"
    DuckDBStore(str(db)).build()
    good = finished_record("c1", "user lives in Lisbon")
    path = dead_run(db, good)
    with open(path, "ab") as segment:  # a record this version cannot read
        segment.write(b'{"done":{"result":{"no":"such field"}}}\n')
    with AugmentationServer(api_key=API_KEY) as server:
        first = seed_with_server(db, [as_input(good), conversation("c2", "I am a nurse.")],
                                 server)
        second = seed_with_server(db, [conversation("c3", "I am a pilot.")], server)
    assert [r.status for r in first.results] == ["skipped", "succeeded"]
    assert second.successful == 1


def test_a_killed_forced_run_keeps_what_it_paid_for(tmp_path):
    db = tmp_path / "m.duckdb"
    record = finished_record("c1", "user lives in Lisbon")
    store = DuckDBStore(str(db))
    store.build()
    store.write("earlier", [record])  # seeded long ago
    store.close()
    forced = finished_record("c1", "user lives in Porto")  # what the forced run got back
    forced = ResultRecord(forced.result, record.content_hash, None, forced.extraction,
                          record.conversation)
    dead_run(db, forced)
    with AugmentationServer(api_key=API_KEY) as server:
        seed_with_server(db, [conversation("c2", "I am a nurse.")], server)
    with duckdb.connect(str(db)) as conn:
        assert conn.execute("SELECT fact FROM facts WHERE fact LIKE 'user lives%'"
                            ).fetchall() == [("user lives in Porto",)]
        assert conn.execute("SELECT run_id FROM seeded_conversations WHERE conversation_id "
                            "= 'c1'").fetchall() == [("deadrun",)]


def write_through(writer: BatchWriter, journal: Journal, records: list[ResultRecord]) -> None:
    """Journal ``records`` and hand them to ``writer``, which writes them and ends."""
    async def run() -> None:
        running = asyncio.create_task(writer.run())
        for record in records:
            journal.finished(record)
            writer.add(record)
        writer.close()  # writes what is pending, then returns
        await running

    try:
        asyncio.run(run())
    finally:
        writer.shutdown()


def store_and_journal(tmp_path: Path) -> tuple[DuckDBStore, Journal]:
    db = tmp_path / "m.duckdb"
    DuckDBStore(str(db)).build()
    return DuckDBStore(str(db)), Journal(journal_beside(str(db)), "deadrun")


def test_each_store_write_deletes_the_journal_it_committed_and_a_kill_loses_nothing(tmp_path):
    db = tmp_path / "m.duckdb"
    store, journal = store_and_journal(tmp_path)
    records = [finished_record(f"c{i}", f"user likes item {i}") for i in range(5)]
    partial = PartialRecord(entity_id="u1", process_id=None, conversation_id="long",
                            content_hash="h", chunks_done=1, chunk_count=3, summary="s",
                            extraction=Extraction(facts=("user likes tea",)))
    journal.chunk_done(partial)
    on_disk = lambda: sorted(journal_beside(str(db)).glob("*.jsonl"))  # noqa: E731
    [first_segment] = on_disk()
    write_through(BatchWriter(store, "deadrun", in_thread=True, journal=journal), journal,
                  records[:3])
    # Committed: its segment is gone; the new one holds only the chunk progress, carried over.
    assert not first_segment.exists()
    [current] = on_disk()
    assert b'"done"' not in current.read_bytes()
    for record in records[3:]:
        journal.finished(record)
    store.close()
    journal.close(delete=False)  # killed here: three in the store, two only in the journal
    with AugmentationServer(api_key=API_KEY) as server:
        seed_with_server(db, [conversation("c9", "I am a nurse.")], server)
        assert server.request_count == 1
    assert ledger(tmp_path) == 6
    store = DuckDBStore(str(db))
    assert store.partials([partial.key]) == {partial.key: partial}
    store.close()


def test_a_segment_that_cannot_be_started_leaves_its_batch_to_be_saved(tmp_path, monkeypatch):
    store, journal = store_and_journal(tmp_path)
    writer = BatchWriter(store, "deadrun", in_thread=True, journal=journal)

    def out_of_files(self) -> None:
        raise JournalError("cannot write the journal: [Errno 24] Too many open files")

    monkeypatch.setattr(Journal, "_open_segment", out_of_files)
    with pytest.raises(JournalError, match="Too many open files"):
        write_through(writer, journal, [finished_record(f"c{i}", "user likes tea")
                                        for i in range(3)])
    writer.flush_now()  # what the engine does when the journal fails: save what is pending
    store.close()
    journal.close(delete=True)
    assert ledger(tmp_path) == 3


def test_a_segment_held_open_elsewhere_does_not_stop_the_run(tmp_path, monkeypatch):
    store, journal = store_and_journal(tmp_path)
    [segment] = journal_beside(str(tmp_path / "m.duckdb")).glob("*.jsonl")
    unlink = Path.unlink

    def held_open(path: Path, missing_ok: bool = False) -> None:
        if path.suffix == ".jsonl":  # a virus scanner reading it, on Windows
            raise PermissionError(13, "The process cannot access the file", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", held_open)
    writer = BatchWriter(store, "deadrun", in_thread=True, journal=journal)
    write_through(writer, journal, [finished_record(f"c{i}", "user likes tea")
                                    for i in range(3)])
    assert not writer.refused and segment.exists()
    store.close()
    assert ledger(tmp_path) == 3
    monkeypatch.undo()
    journal.close(delete=True)  # tried again at the end
    assert not segment.exists()


def test_a_journal_held_open_at_the_runs_end_is_left_for_the_next_run_to_clear(tmp_path,
                                                                               monkeypatch):
    db = tmp_path / "m.duckdb"
    unlink = Path.unlink

    def held_open(path: Path, missing_ok: bool = False) -> None:
        if path.suffix == ".jsonl":  # a virus scanner reading it, on Windows
            raise PermissionError(13, "The process cannot access the file", str(path))
        unlink(path, missing_ok=missing_ok)

    with AugmentationServer(api_key=API_KEY) as server:
        monkeypatch.setattr(Path, "unlink", held_open)
        result = seed_with_server(db, [conversation("c1", "I am a nurse.")], server)
        assert result.successful == 1  # the run ends as it went, not with the file's error
        # Its lock stays too: the next run's replay looks for journals by their locks.
        assert list(journal_beside(str(db)).glob("*.jsonl"))
        assert list(journal_beside(str(db)).glob("*.lock"))
        # Still held open when the next run replays it: that run goes on, and so does the file.
        seed_with_server(db, [conversation("c1", "I am a nurse.")], server)
        assert server.request_count == 1
        assert list(journal_beside(str(db)).glob("*.lock"))
        monkeypatch.undo()
        seed_with_server(db, [conversation("c1", "I am a nurse."),
                              conversation("c2", "I live in Porto.")], server)
        assert server.request_count == 2  # c1 was not sent again
    assert ledger(tmp_path) == 2
    assert not journal_beside(str(db)).exists()


def test_a_sync_puts_new_segments_names_on_the_disk_not_only_their_contents(tmp_path,
                                                                             monkeypatch):
    # A power cut can lose a new file's name though its contents were synced; the newest
    # segment, which holds all the store has not committed, is always a new file.
    store, journal = store_and_journal(tmp_path)
    directory = journal_beside(str(tmp_path / "m.duckdb"))
    synced: list[tuple[int, int]] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        status = os.fstat(fd)
        synced.append((status.st_dev, status.st_ino))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    names = lambda path: synced.count((path.stat().st_dev, path.stat().st_ino))  # noqa: E731
    journal.sync()  # the first: the lock's name and the directory's own name too
    assert names(directory) == 1 and names(directory.parent) == 1
    journal.sync()  # no new segment since: the names are on the disk already
    assert names(directory) == 1
    write_through(BatchWriter(store, "deadrun", in_thread=True, journal=journal), journal,
                  [finished_record("c1", "user likes tea")])
    assert names(directory) == 2 and names(directory.parent) == 1
    store.close()
    journal.close(delete=True)
