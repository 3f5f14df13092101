"""The Memori store: Memori's own tables in SQLite and a real PostgreSQL, through every kind
of ``conn`` Memori accepts (and a plain sqlite3 connection, which Memori mishandles)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("onnxruntime")

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from helpers import conversation  # noqa: E402
from memori_nb import Memori, SeedData, StoreError  # noqa: E402
from memori_nb.backends import LocalBackend  # noqa: E402
from memori_nb.embeddings import Embedder, from_bytes  # noqa: E402
from memori_nb.models import Conversation, ConversationResult, Extraction, Message  # noqa: E402
from memori_nb.stores import SqlStore  # noqa: E402
from memori_nb.stores import writer as batching  # noqa: E402
from memori_nb.stores.base import ResultRecord  # noqa: E402
from memori_sdk import psycopg_conninfo  # noqa: E402

SQLITE_KINDS = ["url", "engine", "sessionmaker", "session", "sqlite3", "sqlite3-memory",
                "factory"]
PG_KINDS = ["pg-url", "pg-sessionmaker", "psycopg", "psycopg-factory"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


class CountingLocal(LocalBackend):
    """The offline extractor, counting what it is sent (a re-run must send nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def augment(self, request):
        self.sent.append(request.conversation_id)
        return await super().augment(request)


def make_conn(kind: str, tmp_path, pg_url_factory=None):
    """What a user passes as conn, for each kind; and a SQLAlchemy URL to inspect with."""
    if kind.startswith("p"):
        url = pg_url_factory()
        info = psycopg_conninfo(url)
        import psycopg
        return {"pg-url": lambda: url,
                "pg-sessionmaker": lambda: sessionmaker(bind=sa.create_engine(url)),
                "psycopg": lambda: psycopg.connect(info),
                "psycopg-factory": lambda: (lambda: psycopg.connect(info))}[kind](), url
    path = tmp_path / "memori.db"
    url = f"sqlite:///{path}"
    if kind == "sqlite3-memory":
        return sqlite3.connect(":memory:"), None
    return {"url": lambda: url, "engine": lambda: sa.create_engine(url),
            "sessionmaker": lambda: sessionmaker(bind=sa.create_engine(url)),
            "session": lambda: sessionmaker(bind=sa.create_engine(url))(),
            "sqlite3": lambda: sqlite3.connect(path),
            "factory": lambda: (lambda: sqlite3.connect(path))}[kind](), url


@pytest.fixture(params=SQLITE_KINDS + PG_KINDS)
def conn_kind(request, tmp_path):
    if request.param.startswith("p"):
        server = request.getfixturevalue("postgres_server")
        names = []

        def fresh() -> str:
            names.append(server.create_database())
            return server.url(names[-1])
        request.addfinalizer(lambda: [server.drop_database(n) for n in names])
        return request.param, make_conn(request.param, tmp_path, fresh)
    return request.param, make_conn(request.param, tmp_path)


def seed(m: Memori, conversations, entity="user-123", **kwargs):
    return asyncio.run(m.seed(SeedData.for_conversations(entity_id=entity,
                                                         conversations=conversations),
                              **kwargs))


LISBON = {"id": "conv-1", "messages": [
    {"role": "user", "content": "I just bought a Tesla Model 3! I live in Lisbon.",
     "timestamp": "2023-05-01T10:00:00Z"},
    {"role": "assistant", "content": "Congratulations!", "timestamp": "2023-05-01T10:00:05Z"}]}
SURF = {"id": "conv-2", "messages": [
    {"role": "user", "content": "I live in Lisbon and I love surfing.",
     "timestamp": "2024-02-03T08:00:00Z"}]}


def test_every_kind_of_conn_seeds_memoris_tables(conn_kind, embedder):
    kind, (conn, _url) = conn_kind
    backend = CountingLocal()
    m = Memori(conn=conn, backend=backend, embedder=embedder)
    m.attribution(entity_id="user-123", process_id="support-bot")
    m.config.storage.build()
    result = seed(m, [LISBON, SURF])
    assert (result.total, result.successful, result.failed) == (2, 2, 0)
    assert result.success_rate == 100.0 and len(result.conversations) == 2

    facts = m.facts("user-123").set_index("fact")
    # A fact's count is the number of conversations that stated it.
    assert facts.loc["user lives_in Lisbon", "mention_count"] == 2
    assert facts.loc["user owns Tesla Model 3", "mention_count"] == 1
    # Its times are when the messages stating it were said at the source (the user's
    # message, not the assistant's reply after it); seeding times have their own columns.
    assert str(facts.loc["user owns Tesla Model 3", "last_seen"]) == "2023-05-01 10:00:00"
    assert str(facts.loc["user lives_in Lisbon", "last_seen"]) == "2024-02-03 08:00:00"
    assert str(facts.loc["user lives_in Lisbon", "first_seen"]) == "2023-05-01 10:00:00"
    assert facts.first_seeded.notna().all() and (facts.first_seeded <= facts.last_seeded).all()

    rows = m.sql("SELECT content, content_embedding FROM memori_entity_fact")
    for content, blob in rows.itertuples(index=False):
        vector = from_bytes(bytes(blob))
        assert vector.shape == (384,) and abs(float((vector ** 2).sum()) - 1) < 1e-3
    count = lambda table: int(m.sql(f"SELECT count(*) AS n FROM {table}").n[0])  # noqa: E731
    assert count("memori_entity") == 1 and count("memori_process") == 1
    assert count("memori_session") == 2 and count("memori_conversation") == 2
    assert count("memori_conversation_message") == 3
    assert count("memori_entity_fact_mention") == 4
    assert count("memori_knowledge_graph") == 3
    summaries = m.sql("SELECT summary FROM memori_conversation ORDER BY id").summary.tolist()
    assert all(summaries) and "Lisbon" in summaries[0]
    assert m.sql("SELECT num FROM memori_schema_version").num.tolist() == [2]
    assert set(m.results().status) == {"succeeded"}

    # Nothing is sent twice; forcing replaces, never inflates.
    again = seed(m, [LISBON, SURF])
    assert again.skipped == 2 and backend.sent == ["conv-1", "conv-2"]
    forced = seed(m, [LISBON, SURF], force=True)
    assert forced.successful == 2
    assert m.facts("user-123").set_index("fact").mention_count.to_dict() == \
        facts.mention_count.to_dict()
    assert count("memori_conversation") == 2 and count("memori_conversation_message") == 3
    assert count("memori_entity_fact_mention") == 4 and count("memori_session") == 2
    assert int(m.sql("SELECT max(num_times) AS n FROM memori_knowledge_graph").n[0]) == 2
    assert len(m.runs()) == 3
    m.close()


def test_failures_and_results_come_back_as_dataframes(tmp_path, embedder):
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local", embedder=embedder)
    result = seed(m, [LISBON, {"id": "bad", "messages": [{"role": "robot", "content": "x"}]}])
    assert (result.successful, result.failed) == (1, 1)
    failures = m.failures()
    assert failures.conversation_id.tolist() == ["bad"]
    assert "role" in failures.error[0]
    assert sorted(m.results().status) == ["failed", "succeeded"]
    assert m.results().warnings.map(type).eq(list).all()


def test_a_conversation_seeded_again_with_new_content_replaces_the_old(tmp_path, embedder):
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local", embedder=embedder)
    seed(m, [conversation("c1", "I live in Lisbon. I have a dog named Rex.")])
    seed(m, [conversation("c1", "I live in Porto. I have a dog named Rex.")])
    facts = m.facts("user-123")
    assert sorted(facts.fact) == ["user has_dog Rex", "user lives_in Porto"]
    assert facts.mention_count.tolist() == [1, 1]
    assert int(m.sql("SELECT count(*) AS n FROM memori_conversation").n[0]) == 1
    predicates = m.store.triples("user-123").predicate.tolist()
    assert sorted(predicates) == ["has_dog", "lives_in"]


def test_a_conversation_the_store_refuses_fails_alone_and_is_sent_again_later(tmp_path,
                                                                             embedder):
    path = tmp_path / "m.db"
    m = Memori(conn=f"sqlite:///{path}", backend="local", embedder=embedder)
    m.config.storage.build()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON memori_nb_seeded_conversations "
                   "WHEN NEW.conversation_id = 'c2' BEGIN SELECT RAISE(ABORT, 'disk says no'); "
                   "END")
    conversations = [conversation(f"c{i}", f"I live in City{i}.") for i in range(1, 4)]
    result = seed(m, conversations)
    assert (result.successful, result.failed) == (2, 1)
    refused = result.conversations[1]
    assert refused.status == "failed" and "disk says no" in refused.error
    assert m.failures().conversation_id.tolist() == ["c2"]
    with sqlite3.connect(path) as db:
        # Nothing of c2 is in Memori's tables; the others are whole.
        assert db.execute("SELECT count(*) FROM memori_conversation").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM memori_entity_fact WHERE content LIKE "
                          "'%City2%'").fetchone()[0] == 0
        db.execute("DROP TRIGGER refuse")
    again = seed(m, conversations)
    assert (again.successful, again.skipped) == (1, 2)


def test_a_store_that_refuses_everything_stops_the_run_and_says_why(tmp_path, embedder):
    path = tmp_path / "m.db"
    m = Memori(conn=f"sqlite:///{path}", backend="local", embedder=embedder)
    m.config.storage.build()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON memori_nb_conversation_results "
                   "BEGIN SELECT RAISE(ABORT, 'read-only today'); END")
    with pytest.raises(StoreError, match="read-only today"):
        seed(m, [conversation("c1", "I live in Lisbon.")])
    with sqlite3.connect(path) as db:
        for table in ("memori_entity_fact", "memori_conversation", "memori_entity"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_the_apps_own_counts_are_kept_and_its_rows_never_deleted(tmp_path, embedder):
    path = tmp_path / "m.db"
    m = Memori(conn=f"sqlite:///{path}", backend="local", embedder=embedder)
    m.config.storage.build()
    blob = embedder.embed_bytes(["user likes tea"])[0]
    with sqlite3.connect(path) as db:  # as the SDK writes a fact it saw three times
        db.execute("INSERT INTO memori_entity (uuid, external_id) VALUES ('e', 'user-123')")
        db.execute("INSERT INTO memori_entity_fact (uuid, entity_id, content, "
                   "content_embedding, num_times, date_last_time, uniq) VALUES "
                   "('f', 1, 'user likes tea', ?, 3, datetime('now'), ?)",
                   (blob, __import__("memori_nb.stores.sql", fromlist=["uniq"]).uniq(
                       "user likes tea")))
    seed(m, [conversation("c1", "I like tea.")])
    assert m.facts().set_index("fact").mention_count["user likes tea"] == 4
    seed(m, [conversation("c1", "I live in Oslo.")])  # c1 no longer says it
    assert m.facts().set_index("fact").mention_count["user likes tea"] == 3


def test_the_same_conversation_in_two_seed_data_of_one_entity_is_stored_once(tmp_path,
                                                                            embedder):
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local", embedder=embedder)
    data = [SeedData.for_conversations(entity_id="ann", conversations=[
        conversation("c1", text)]) for text in ("I live in Lisbon.", "I live in Porto.")]
    asyncio.run(m.seed(data))
    assert int(m.sql("SELECT count(*) AS n FROM memori_conversation").n[0]) == 1
    assert m.facts().mention_count.tolist() == [1]


def test_an_unknown_schema_revision_is_refused(tmp_path, embedder):
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE memori_schema_version (num INTEGER NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO memori_schema_version VALUES (7)")
    m = Memori(conn=sqlite3.connect(path), backend="local", embedder=embedder)
    with pytest.raises(StoreError, match="revision 7; memori_nb writes revision 2"):
        m.config.storage.build()


def test_ids_longer_than_memori_holds_fail_before_anything_is_sent(tmp_path, embedder):
    backend = CountingLocal()
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend=backend, embedder=embedder)
    result = seed(m, [conversation("c1", "I live in Lisbon.")], entity="x" * 101)
    assert result.failed == 1 and backend.sent == []
    assert "entity id" in result.conversations[0].error
    assert "at most 100" in result.conversations[0].error


def test_each_fact_text_is_embedded_once_per_run(tmp_path):
    class Counting(Embedder):
        texts: list[str] = []

        def _compute(self, texts):
            Counting.texts += texts
            return super()._compute(texts)

    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local", embedder=Counting())
    conversations = [conversation(f"c{i}", "I live in Lisbon. I love jazz.") for i in range(30)]
    asyncio.run(m.seed([SeedData.for_conversations(entity_id=e, conversations=conversations)
                        for e in ("ann", "bob")], batch_size=3))
    assert sorted(Counting.texts) == ["user likes jazz", "user lives_in Lisbon"]


def test_new_facts_are_embedded_while_results_gather_so_their_write_has_none_left(
        tmp_path, monkeypatch):
    # The run waits for its last write: embedding a few seconds' worth of facts there made
    # network runs end hundreds of milliseconds after their last answer.
    monkeypatch.setattr(batching, "FLUSH_SECONDS", 60.0)  # nothing written before close()

    class Counting(Embedder):
        def __init__(self) -> None:
            super().__init__()
            self.texts: list[str] = []

        def _compute(self, texts):
            self.texts += texts
            return super()._compute(texts)

    store = SqlStore(f"sqlite:///{tmp_path / 'm.db'}", embedder=Counting())
    store.build()
    records = []
    for i, place in enumerate(["Lisbon", "Porto", "Braga"]):
        said = Conversation(id=f"c{i}", messages=(
            Message(role="user", content=f"I live in {place}."),))
        result = ConversationResult(conversation_id=said.id, entity_id="ann",
                                    status="succeeded", triples_count=0)
        records.append(ResultRecord(result, said.content_hash(), None,
                                    Extraction(facts=(f"user lives_in {place}",)), said))
    writer = batching.BatchWriter(store, "run-1", in_thread=True)

    async def gather_then_close() -> tuple[list[str], int]:
        running = asyncio.create_task(writer.run())
        for record in records:
            writer.add(record)
        for _ in range(200):  # prepared on the write's thread within PREPARE_SECONDS
            if len(store.embedder.texts) == 3:
                break
            await asyncio.sleep(0.05)
        embedded, stored = list(store.embedder.texts), len(store.facts())
        writer.close()
        await running
        return embedded, stored

    try:
        embedded, stored_meanwhile = asyncio.run(gather_then_close())
    finally:
        writer.shutdown()
    assert sorted(embedded) == ["user lives_in Braga", "user lives_in Lisbon",
                                "user lives_in Porto"] and stored_meanwhile == 0
    assert store.embedder.texts == embedded  # the write found them all embedded
    assert len(store.facts()) == 3
    store.close()


def test_recall_finds_the_attributed_entitys_facts(tmp_path, embedder):
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local", embedder=embedder)
    m.attribution(entity_id="user-123")
    seed(m, [LISBON, SURF, conversation("c3", "I have a dog named Rex. I work at Acme.")])
    best = m.recall("where does the user live?", limit=2)
    assert best[0]["content"] == "user lives_in Lisbon" and len(best) == 2
    assert best[0]["score"] >= best[1]["score"]
    assert m.recall("what pet does the user have?")[0]["content"] == "user has_dog Rex"
    assert m.recall("anything", entity_id="nobody") == []


def test_a_sqlite3_connection_is_used_as_a_connection_not_a_factory(tmp_path, embedder):
    path = tmp_path / "m.db"
    own = sqlite3.connect(path)
    m = Memori(conn=own, backend="local", embedder=embedder)
    assert seed(m, [LISBON]).successful == 1
    m.close()
    # The caller's connection still works and sees the rows.
    assert own.execute("SELECT count(*) FROM memori_entity_fact").fetchone()[0] == 2


def test_a_database_url_with_a_password_never_shows_it():
    with pytest.raises(StoreError) as caught:
        SqlStore("postgresql+psycopg://someone:s3cret-pass@127.0.0.1:1/nowhere")
    assert "s3cret-pass" not in str(caught.value) and "***" in str(caught.value)


def test_the_cli_seeds_memoris_tables_from_a_url_and_resumes(tmp_path):
    import io
    import json
    from importlib.resources import files

    from memori_nb.cli import main

    sample = str(files("memori_nb") / "data" / "sample_conversations.json")
    url = f"sqlite:///{tmp_path / 'memori.db'}"

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        return main(["seed", sample, "--backend", "local", "--db", url, "--json", *args],
                    stdout=out, stderr=err), json.loads(out.getvalue())

    code, first = run()
    assert code == 0 and first["successful"] == 37 and first["total_triples"] > 0
    code, again = run()
    assert code == 0 and again["skipped"] == 37 and again["successful"] == 0
    with sqlite3.connect(tmp_path / "memori.db") as db:
        assert db.execute("SELECT count(*) FROM memori_conversation").fetchone()[0] == 37
        assert db.execute("SELECT count(DISTINCT external_id) FROM memori_entity"
                          ).fetchone()[0] == 3


def test_facts_beyond_ascii_keep_their_own_rows():
    from memori_nb.stores.sql import uniq

    assert uniq("user likes 寿司") != uniq("user likes 天ぷら")
    # Latin letters with accents keep Memori's own key (the SDK drops them): one row each.
    import hashlib
    assert uniq("User lives in Zürich") == hashlib.sha256(b"userlivesinzrich").hexdigest()
    # Plain ASCII keeps Memori's own key, so the SDK deduplicates with what was seeded.
    import hashlib
    assert uniq("User owns a Tesla!") == hashlib.sha256(b"userownsatesla").hexdigest()


def test_a_psycopg_connection_in_autocommit_mode_still_commits(postgres_server, embedder):
    import psycopg

    name = postgres_server.create_database()
    try:
        info = psycopg_conninfo(postgres_server.url(name))
        own = psycopg.connect(info, autocommit=True)
        m = Memori(conn=own, backend="local", embedder=embedder)
        assert seed(m, [LISBON]).successful == 1
        with psycopg.connect(info) as other:  # another session sees it: it was committed
            assert other.execute("SELECT count(*) FROM memori_entity_fact").fetchone()[0] == 2
        # The server drops the connection (restart, idle timeout): memori_nb cannot reopen
        # a caller's own connection, and says so plainly.
        with psycopg.connect(info, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [own.info.backend_pid])
        with pytest.raises(StoreError):
            seed(m, [SURF])
    finally:
        postgres_server.drop_database(name)


def test_a_dropped_connection_memori_nb_made_is_opened_again(postgres_server, embedder):
    import psycopg

    name = postgres_server.create_database()
    try:
        url = postgres_server.url(name)
        m = Memori(conn=url, backend="local", embedder=embedder)
        assert seed(m, [LISBON]).successful == 1
        with psycopg.connect(psycopg_conninfo(url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = %s AND pid <> pg_backend_pid()", [name])
        with pytest.raises(StoreError):
            m.results()  # the first use finds the connection gone ...
        assert seed(m, [SURF]).successful == 1  # ... and the next opens a new one
        m.close()
    finally:
        postgres_server.drop_database(name)


def test_runs_started_within_one_second_sort_right(tmp_path, embedder):
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local", embedder=embedder)
    ids = [seed(m, [conversation(f"c{i}", "I live in Lisbon.")]).run_id for i in range(4)]
    assert m.store.latest_run_id() == ids[-1]
    assert m.runs().run_id.tolist() == ids[::-1]


def test_a_revision_1_schema_is_brought_to_revision_2(tmp_path, embedder):
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE memori_schema_version (num INTEGER NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO memori_schema_version VALUES (1)")
    m = Memori(conn=f"sqlite:///{path}", backend="local", embedder=embedder)
    m.config.storage.build()
    assert m.sql("SELECT num FROM memori_schema_version").num.tolist() == [2]


def test_passwords_never_show_in_the_cli_or_reprs(tmp_path):
    import io
    from importlib.resources import files

    from memori_nb.cli import main
    from memori_nb.stores.connection import hide_password

    assert hide_password("postgresql://bob:s3cret@h/db") == "postgresql://bob:***@h/db"
    assert "s3cret" not in hide_password("postgresql://h/db?user=bob&password=s3cret")
    sample = str(files("memori_nb") / "data" / "sample_conversations.json")
    out, err = io.StringIO(), io.StringIO()
    code = main(["seed", sample, "--backend", "local", "--db",
                 "postgresql+psycopg://bob:s3cret@127.0.0.1:1/nowhere"], stdout=out, stderr=err)
    assert code == 1 and "s3cret" not in out.getvalue() + err.getvalue()
