"""The DuckDB store: schema, one-transaction batch writes, the ledger and result queries."""

import asyncio
import subprocess
import sys

import duckdb
import pytest

from helpers import triple

from memori_nb import Memori, SeedData
from memori_nb.errors import StoreError
from memori_nb.models import (Conversation, ConversationResult, Extraction, Message,
                              SeedConfig)
from memori_nb.stores import DuckDBStore, ResultRecord

TABLES = {"runs", "conversation_results", "seeded_conversations", "entities", "facts",
          "triples", "conversation_summaries", "process_attributes"}


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    target = ":memory:" if request.param == "memory" else tmp_path / "memori.duckdb"
    store = DuckDBStore(target)
    store.build()
    yield store
    store.close()


def ok(cid: str, entity: str = "u1", *, facts=(), triples=(), summary=None, attributes=(),
       content_hash: str | None = None, process_id: str | None = None) -> ResultRecord:
    result = ConversationResult(conversation_id=cid, entity_id=entity, status="succeeded",
                                triples_count=len(triples), summary=summary, chunks_processed=1,
                                duration_ms=12.5, warnings=("split into 1 part",))
    extraction = Extraction(triples=tuple(triples), facts=tuple(facts), summary=summary,
                            attributes=tuple(attributes))
    return ResultRecord(result, content_hash or f"hash-{cid}", process_id, extraction)


def failed(cid: str, entity: str = "u1", error: str = "HTTP 422: rejected") -> ResultRecord:
    result = ConversationResult(conversation_id=cid, entity_id=entity, status="failed",
                                error=error)
    return ResultRecord(result, f"hash-{cid}", None, None)


def table_names(store) -> set[str]:
    return set(store.sql("select table_name from information_schema.tables").table_name)


def test_build_creates_every_table_and_can_run_again(store):
    store.build()
    assert TABLES <= table_names(store)
    assert store.facts().empty and store.triples().empty


def test_write_stores_results_and_the_ledger_only_for_successes(store):
    store.write("r1", [ok("c1", facts=["user likes tea"]), failed("c2"),
                       ResultRecord(ConversationResult(conversation_id="c3", entity_id="u1",
                                                       status="skipped",
                                                       reason="already seeded"),
                                    "hash-c3", None, None)])
    results = store.sql("select conversation_id, status, error, warnings, duration_ms "
                        "from conversation_results order by conversation_id")
    assert list(results.conversation_id) == ["c1", "c2", "c3"]
    assert list(results.status) == ["succeeded", "failed", "skipped"]
    assert results.error[1] == "HTTP 422: rejected"
    assert list(results.warnings[0]) == ["split into 1 part"]
    assert results.duration_ms[0] == 12.5
    ledger = store.sql("select entity_id, conversation_id, content_hash, run_id "
                       "from seeded_conversations")
    assert ledger.values.tolist() == [["u1", "c1", "hash-c1", "r1"]]
    assert list(store.sql("select entity_id from entities").entity_id) == ["u1"]


def test_facts_are_deduplicated_per_entity_and_counted(store):
    store.write("r1", [ok("c1", facts=["user likes tea", "user lives in Lisbon"]),
                       ok("c2", facts=["user likes tea"]),
                       ok("c3", "u2", facts=["user likes tea"])])
    store.write("r2", [ok("c4", facts=["user likes tea", "user lives in Lisbon"])])
    facts = store.facts()
    assert facts[["entity_id", "fact", "mention_count"]].values.tolist() == [
        ["u1", "user likes tea", 3], ["u1", "user lives in Lisbon", 2],
        ["u2", "user likes tea", 1]]
    assert list(store.facts("u2").fact) == ["user likes tea"]
    first = facts.set_index(["entity_id", "fact"])
    assert (first.first_seeded <= first.last_seeded).all()
    # Without the conversations' messages there is no source time.
    assert first.first_seen.isna().all() and first.last_seen.isna().all()


def test_a_failed_conversation_adds_no_memories(store):
    record = failed("c1")
    store.write("r1", [record])
    assert store.facts().empty and store.triples().empty
    assert store.sql("select count(*) as n from seeded_conversations").n[0] == 0


def test_triples_are_one_row_each_with_their_conversation(store):
    store.write("r1", [ok("c1", triples=[triple("tea"), triple("tea")]),
                       ok("c2", "u2", triples=[triple("jazz")])])
    rows = store.triples()[["entity_id", "conversation_id", "run_id", "subject_name",
                            "predicate", "object_name", "object_type"]].values.tolist()
    assert rows == [["u1", "c1", "r1", "user", "likes", "tea", "thing"],
                    ["u1", "c1", "r1", "user", "likes", "tea", "thing"],
                    ["u2", "c2", "r1", "user", "likes", "jazz", "thing"]]
    assert list(store.triples("u2").object_name) == ["jazz"]


def test_summaries_are_upserted_per_conversation(store):
    store.write("r1", [ok("c1", summary="first"), ok("c2", summary="other")])
    store.write("r2", [ok("c1", summary="second", content_hash="new-hash")])
    rows = store.sql("select conversation_id, summary, run_id from conversation_summaries "
                     "order by conversation_id").values.tolist()
    assert rows == [["c1", "second", "r2"], ["c2", "other", "r1"]]


def test_process_attributes_are_counted(store):
    store.write("r1", [ok("c1", attributes=["helpful", "brief"], process_id="agent"),
                       ok("c2", attributes=["helpful"], process_id="agent"),
                       ok("c3", attributes=["ignored without a process"])])
    store.write("r2", [ok("c4", attributes=["helpful"], process_id="agent")])
    rows = store.sql("select process_id, attribute, mention_count from process_attributes "
                     "order by attribute").values.tolist()
    assert rows == [["agent", "brief", 1], ["agent", "helpful", 3]]


def test_already_seeded_matches_entity_conversation_and_content(store):
    store.write("r1", [ok("c1", content_hash="h1"), ok("c2", content_hash="h2"),
                       failed("c3")])
    keys = [("u1", "c1", "h1"),          # seeded
            ("u1", "c1", "edited"),      # same id, new content
            ("u2", "c2", "h2"),          # another entity
            ("u1", "c3", "hash-c3"),     # failed before
            ("u1", "c2", "h2")]          # seeded
    assert store.already_seeded(keys) == {0, 4}
    assert store.already_seeded([]) == set()


def test_writing_the_same_success_twice_keeps_one_ledger_row(store):
    store.write("r1", [ok("c1")])
    store.write("r2", [ok("c1")])
    assert store.sql("select count(*) as n from seeded_conversations").n[0] == 1
    assert store.sql("select count(*) as n from conversation_results").n[0] == 2


def test_results_and_failures_default_to_the_latest_run(store):
    store.start_run("run-old", backend="local", config=SeedConfig(), force=False)
    store.write("run-old", [failed("old-1"), ok("old-2")])
    store.start_run("run-new", backend="local", config=SeedConfig(), force=True)
    store.write("run-new", [ok("new-1"), failed("new-2", error="HTTP 401: bad key")])
    assert store.latest_run_id() == "run-new"
    assert sorted(store.results().conversation_id) == ["new-1", "new-2"]
    assert sorted(store.results("run-old").conversation_id) == ["old-1", "old-2"]
    failures = store.failures()
    assert failures[["conversation_id", "error"]].values.tolist() == [
        ["new-2", "HTTP 401: bad key"]]
    assert list(store.failures("run-old").conversation_id) == ["old-1"]
    assert list(store.runs().run_id) == ["run-new", "run-old"]


def test_a_file_store_keeps_its_data_after_reopening(tmp_path):
    path = tmp_path / "memori.duckdb"
    first = DuckDBStore(path)
    first.build()
    first.write("r1", [ok("c1", facts=["user likes tea"])])
    first.close()
    again = DuckDBStore(str(path))
    again.build()
    assert list(again.facts().fact) == ["user likes tea"]
    again.close()


def test_a_given_connection_is_left_open():
    conn = duckdb.connect()
    store = DuckDBStore(conn)
    store.build()
    store.write("r1", [ok("c1", facts=["user likes tea"])])
    store.close()
    assert conn.execute("select fact from facts").fetchall() == [("user likes tea",)]
    conn.close()


def test_opening_a_path_in_a_missing_directory_names_the_path(tmp_path):
    path = tmp_path / "no-such-dir" / "memori.duckdb"
    with pytest.raises(StoreError) as caught:
        DuckDBStore(path)
    assert str(path) in str(caught.value)


def break_triples(store) -> list[ResultRecord]:
    """Drop a table the batch writes late, so the write fails after earlier inserts ran."""
    store.conn.execute("DROP TABLE triples")
    return [ok("c2", facts=["user likes jazz"], triples=[triple("jazz")], summary="s"),
            failed("c3")]


def test_a_failed_write_leaves_nothing_of_the_batch(store):
    store.write("r1", [ok("c1", facts=["user likes tea"])])
    with pytest.raises(StoreError, match="could not write 2 results"):
        store.write("r2", break_triples(store))
    assert list(store.sql("select conversation_id from conversation_results").conversation_id) \
        == ["c1"]
    assert list(store.facts().fact) == ["user likes tea"]
    assert list(store.sql("select conversation_id from seeded_conversations").conversation_id) \
        == ["c1"]
    assert store.sql("select count(*) as n from conversation_summaries").n[0] == 0
    # The store stays usable after the rollback.
    store.build()
    store.write("r3", [ok("c4", facts=["user likes tea"])])
    assert store.facts().mention_count.tolist() == [2]


def test_a_failed_write_says_what_went_wrong():
    store = DuckDBStore(":memory:")
    store.build()
    with pytest.raises(StoreError, match="triples"):
        store.write("r1", break_triples(store))


# --- a conversation seeded again replaces what it contributed -------------------------------


def with_messages(record: ResultRecord, *texts: str) -> ResultRecord:
    messages = tuple(Message(role=("user", "assistant")[i % 2], content=text)
                     for i, text in enumerate(texts))
    conversation = Conversation(id=record.result.conversation_id, messages=messages)
    return ResultRecord(record.result, record.content_hash, record.process_id,
                        record.extraction, conversation)


def test_source_times_are_stored_as_utc_to_the_microsecond(store):
    """Times given to the store directly (not read by validation): naive ones are UTC,
    others are converted; a conversation's span and a fact's times follow its messages."""
    from datetime import datetime, timedelta, timezone

    def conversation(cid: str, said: list) -> ResultRecord:
        messages = tuple(Message(role="user", content=f"I like {word}.", timestamp=when)
                         for word, when in zip(["tea", "jazz", "maps"], said))
        record = ok(cid, facts=["user likes tea", "user likes jazz", "user likes maps"])
        return ResultRecord(record.result, record.content_hash, None, record.extraction,
                            Conversation(id=cid, messages=messages))

    store.write("r1", [
        conversation("naive", [datetime(2024, 3, 1, 12, 0, 0, 123456), None,
                               datetime(1969, 7, 20, 20, 17, 40)]),
        conversation("zoned", [datetime(2024, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
                               datetime(2024, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5))),
                               None])])
    said_at = store.conn.execute("SELECT conversation_id, said_at FROM messages "
                                 "ORDER BY conversation_id, position").fetchall()
    assert said_at == [
        ("naive", datetime(2024, 3, 1, 12, 0, 0, 123456)), ("naive", None),
        ("naive", datetime(1969, 7, 20, 20, 17, 40)),
        ("zoned", datetime(2024, 3, 1, 12, 30)), ("zoned", datetime(2024, 3, 1, 14, 0)),
        ("zoned", None)]
    assert store.conn.execute("SELECT conversation_id, started_at, ended_at FROM conversations "
                              "ORDER BY 1").fetchall() == [
        ("naive", datetime(1969, 7, 20, 20, 17, 40), datetime(2024, 3, 1, 12, 0, 0, 123456)),
        ("zoned", datetime(2024, 3, 1, 12, 30), datetime(2024, 3, 1, 14, 0))]
    # A fact said in a message without a time has its conversation's span.
    assert store.conn.execute(
        "SELECT fact, first_said, last_said FROM fact_mentions WHERE conversation_id = 'zoned' "
        "ORDER BY fact").fetchall() == [
        ("user likes jazz", datetime(2024, 3, 1, 14, 0), datetime(2024, 3, 1, 14, 0)),
        ("user likes maps", datetime(2024, 3, 1, 12, 30), datetime(2024, 3, 1, 14, 0)),
        ("user likes tea", datetime(2024, 3, 1, 12, 30), datetime(2024, 3, 1, 12, 30))]


def contents(store) -> dict:
    """Everything a conversation contributes, without run ids and times."""
    query = {
        "facts": "SELECT entity_id, fact, mention_count FROM facts",
        "fact_mentions": "SELECT * FROM fact_mentions",
        "triples": "SELECT entity_id, conversation_id, object_name FROM triples",
        "messages": "SELECT conversation_id, content_hash, position, content FROM messages",
        "summaries": "SELECT conversation_id, summary FROM conversation_summaries",
        "conversations": "SELECT conversation_id, content_hash, message_count "
                         "FROM conversations",
        "ledger": "SELECT entity_id, conversation_id, content_hash FROM seeded_conversations",
        "attributes": "SELECT process_id, attribute, mention_count FROM process_attributes"}
    return {name: sorted(map(tuple, store.sql(sql).values.tolist()))
            for name, sql in query.items()}


@pytest.mark.parametrize("content_hash", ["hash-c1", "edited"], ids=["forced", "changed"])
def test_a_conversation_written_again_replaces_what_it_contributed(store, content_hash):
    store.write("r1", [
        with_messages(ok("c1", facts=["user likes tea", "user lives in Lisbon"],
                         triples=[triple("tea")], summary="first", attributes=["helpful"],
                         process_id="agent"), "I like tea.", "Noted.", "I live in Lisbon."),
        with_messages(ok("c2", facts=["user likes tea"], triples=[triple("tea")],
                         attributes=["helpful"], process_id="agent"), "Tea again.")])
    store.write("r2", [with_messages(
        ok("c1", facts=["user likes tea", "user lives in Porto"], triples=[triple("jazz")],
           attributes=["brief"], process_id="agent", content_hash=content_hash),
        "I like tea.", "I moved to Porto.")])
    after = contents(store)
    assert after["facts"] == [("u1", "user likes tea", 2), ("u1", "user lives in Porto", 1)]
    assert after["triples"] == [("u1", "c1", "jazz"), ("u1", "c2", "tea")]
    assert after["messages"] == [("c1", content_hash, 0, "I like tea."),
                                 ("c1", content_hash, 1, "I moved to Porto."),
                                 ("c2", "hash-c2", 0, "Tea again.")]
    assert after["summaries"] == []  # the new version has none: the old one is gone
    assert after["conversations"] == [("c1", content_hash, 2), ("c2", "hash-c2", 1)]
    assert after["ledger"] == [("u1", "c1", content_hash), ("u1", "c2", "hash-c2")]
    assert after["attributes"] == [("agent", "brief", 1), ("agent", "helpful", 1)]
    assert store.sql("SELECT run_id FROM seeded_conversations WHERE conversation_id = 'c1'"
                     ).run_id.tolist() == ["r2"]


def test_a_conversation_twice_in_one_batch_counts_once(store):
    first = ok("c1", facts=["user likes tea"], triples=[triple("tea")], content_hash="v1")
    last = ok("c1", facts=["user likes tea", "user likes jazz"], triples=[triple("jazz")],
              content_hash="v2")
    store.write("r1", [first, last])
    after = contents(store)
    assert after["facts"] == [("u1", "user likes jazz", 1), ("u1", "user likes tea", 1)]
    assert after["triples"] == [("u1", "c1", "jazz")]
    assert after["ledger"] == [("u1", "c1", "v2")]
    assert store.sql("SELECT count(*) AS n FROM conversation_results").n[0] == 2


def test_forcing_a_run_again_leaves_every_row_and_count_as_after_one_run():
    lisbon = {"id": "conv-1", "messages": [
        {"role": "user", "content": "I just bought a Tesla Model 3! I live in Lisbon.",
         "timestamp": "2023-05-01T10:00:00Z"},
        {"role": "assistant", "content": "Congratulations!",
         "timestamp": "2023-05-01T10:00:05Z"}]}
    surf = {"id": "conv-2", "messages": [
        {"role": "user", "content": "I live in Lisbon and I love surfing."}]}
    m = Memori(conn=":memory:", backend="local")
    m.attribution(entity_id="u1", process_id="bot")

    def seed(conversations, **kwargs):
        return asyncio.run(m.seed(SeedData.for_conversations(
            entity_id="u1", process_id="bot", conversations=conversations), **kwargs))

    seed([lisbon, surf])
    once = contents(m.store)
    assert ("u1", "user lives_in Lisbon", 2) in once["facts"]
    for _ in range(2):
        assert seed([lisbon, surf], force=True).successful == 2
        assert contents(m.store) == once
    assert seed([lisbon], force=True).successful == 1
    assert contents(m.store) == once
    m.close()


def test_a_file_locked_by_another_process_names_it_and_says_what_to_do(tmp_path):
    path = tmp_path / "memori.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('open', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError) as caught:
            DuckDBStore(path)
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "\n" not in message
    assert f"is in use by process {holder.pid} (python" in message
    assert "m.close()" in message and "another file" in message
    assert str(path) in message
    DuckDBStore(path).close()  # free once the other process is gone


def test_the_store_opens_a_file_a_notebook_connection_has_open(tmp_path):
    import duckdb

    path = str(tmp_path / "m.duckdb")
    notebook = duckdb.connect(path)
    store = DuckDBStore(path)
    store.build()
    assert notebook.execute("SELECT count(*) FROM facts").fetchone() == (0,)
    store.close()
    notebook.close()


OLD_KEYED_TABLES = """
CREATE TABLE seeded_conversations (
    entity_id VARCHAR, conversation_id VARCHAR, content_hash VARCHAR, run_id VARCHAR,
    seeded_at TIMESTAMP, PRIMARY KEY (entity_id, conversation_id, content_hash));
CREATE TABLE conversations (
    entity_id VARCHAR, conversation_id VARCHAR, title VARCHAR, content_hash VARCHAR,
    message_count INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP, run_id VARCHAR,
    seeded_at TIMESTAMP, PRIMARY KEY (entity_id, conversation_id));
CREATE TABLE facts (
    entity_id VARCHAR, fact VARCHAR, mention_count BIGINT, first_seen TIMESTAMP,
    last_seen TIMESTAMP, PRIMARY KEY (entity_id, fact));
CREATE TABLE conversation_summaries (
    entity_id VARCHAR, conversation_id VARCHAR, summary VARCHAR, run_id VARCHAR,
    updated_at TIMESTAMP, PRIMARY KEY (entity_id, conversation_id));
"""


def test_a_database_with_the_earlier_keyed_tables_is_rebuilt_without_losing_a_row(tmp_path):
    # Earlier versions indexed these tables; the indexes outgrew DuckDB's memory limit at a
    # million conversations, so opening such a file rebuilds them once, rows unchanged.
    path = tmp_path / "memori.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute(OLD_KEYED_TABLES)
    conn.execute("INSERT INTO seeded_conversations VALUES ('u1', 'c1', 'hash-c1', 'r0', NULL)")
    conn.execute("INSERT INTO facts VALUES ('u1', 'user likes tea', 2, NULL, NULL)")
    conn.close()

    store = DuckDBStore(path)
    store.build()
    keys = store.sql("SELECT table_name FROM duckdb_constraints() "
                     "WHERE constraint_type = 'PRIMARY KEY'").table_name
    assert not {"seeded_conversations", "conversations", "facts",
                "conversation_summaries"} & set(keys)
    assert store.already_seeded([("u1", "c1", "hash-c1")]) == {0}
    # Written again, a fact still counts on from its row, and the ledger keeps one row.
    store.write("r1", [ok("c1", facts=["user likes tea"])])
    assert store.sql("SELECT mention_count FROM facts").mention_count.tolist() == [3]
    assert len(store.sql("SELECT * FROM seeded_conversations")) == 1
    with pytest.raises(duckdb.ConstraintException):  # the key columns still refuse NULL
        store.sql("INSERT INTO facts (entity_id, fact) VALUES (NULL, 'x')")
    store.close()


def test_a_write_on_a_closed_connection_is_a_store_error():
    conn = duckdb.connect()
    store = DuckDBStore(conn)
    store.build()
    conn.close()
    with pytest.raises(StoreError, match="could not write 1 result: "):
        store.write("r1", [ok("c1", facts=["user likes tea"])])
