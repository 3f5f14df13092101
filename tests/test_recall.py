"""Recall on both stores: the right facts first, with the conversations that stated them and
when; on DuckDB, embeddings made by the first recall that needs them and kept."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone
from importlib import resources

import duckdb
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sqlalchemy")

from memori_nb import ConfigurationError, Memori, SeedData, StoreError  # noqa: E402
from memori_nb import embeddings as emb  # noqa: E402
from memori_nb.embeddings import Embedder  # noqa: E402
from memori_nb.models import Extraction  # noqa: E402
from memori_nb.notebook import recall as recall_frame  # noqa: E402
from memori_nb.recall import RECALL_FACTS  # noqa: E402
from memori_nb.stores import DuckDBStore  # noqa: E402

STORES = ["duckdb", "sqlite"]
ALL_STORES = STORES + ["postgresql"]


@pytest.fixture(scope="module")
def model() -> Embedder:
    return Embedder()


class Recording:
    """The real embedder, noting every text a store or recall asks it to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def load(self) -> Recording:
        self.inner.load()
        return self

    def embed(self, texts):
        self.texts += list(texts)
        return self.inner.embed(texts)

    def embed_bytes(self, texts):
        self.texts += list(texts)
        return self.inner.embed_bytes(texts)


class StatedFacts:
    """A backend whose facts are the user's messages, one per line: what a test states is
    what the store holds."""

    name = "stated"
    requires_network = False

    async def augment(self, request):
        facts = tuple(line for m in request.messages if m.role == "user"
                      for line in m.content.splitlines() if line)
        return Extraction(facts=facts, summary=f"{len(facts)} facts")

    async def aclose(self):
        pass


def conn_for(kind: str, tmp_path) -> str:
    return str(tmp_path / "m.duckdb") if kind == "duckdb" else f"sqlite:///{tmp_path / 'm.db'}"


@pytest.fixture(params=ALL_STORES)
def store(request, tmp_path) -> tuple[str, str]:
    """(kind, conn) of an empty store: DuckDB, SQLite, or a real PostgreSQL database."""
    kind = request.param
    return kind, request.getfixturevalue("pg_url") if kind == "postgresql" \
        else conn_for(kind, tmp_path)


def said(cid: str, *facts: str, at: datetime | None = None) -> dict:
    """A conversation in which the user states ``facts`` (at ``at``, when given)."""
    message = {"role": "user", "content": "\n".join(facts)}
    if at is not None:
        message["timestamp"] = at.isoformat()
    return {"id": cid, "messages": [message, {"role": "assistant", "content": "Noted."}]}


def seed(m: Memori, entity_id: str, *conversations: dict) -> None:
    result = asyncio.run(m.seed(SeedData.for_conversations(entity_id=entity_id,
                                                           conversations=list(conversations))))
    assert result.failed == 0


def sample() -> list[dict]:
    return json.loads(resources.files("memori_nb").joinpath(
        "data/sample_conversations.json").read_text())


def stating(entity: dict, word: str) -> list[str]:
    """Ids of the entity's sample conversations where the user says ``word``."""
    return [c["id"] for c in entity["conversations"] if any(
        word in m["content"].lower() for m in c["messages"] if m["role"] == "user")]


def test_the_right_fact_comes_first_with_its_conversations_and_times(store, model):
    kind, conn = store
    data = sample()
    m = Memori(conn=conn, backend="local", embedder=model)
    asyncio.run(m.seed([SeedData.for_conversations(entity_id=e["entity_id"],
                                                   conversations=e["conversations"])
                        for e in data]))
    ana, ben = data[0], data[1]
    # What the best facts are about, in any order (Ben owns two cars).
    for entity, query, words in ((ana, "what is she allergic to?", ["penicillin"]),
                                 (ana, "what is the name of her cat?", ["miso"]),
                                 (ana, "which city does she live in?", ["lisbon"]),
                                 (ben, "what car does he drive?", ["subaru", "tesla"]),
                                 (ben, "does he have kids?", ["kids"]),
                                 (ben, "which company does he work for?", ["ridgeline"])):
        best = m.recall(query, entity_id=entity["entity_id"], limit=3)
        assert len(best) == 3 and best[0]["score"] >= best[1]["score"] >= best[2]["score"]
        top = best[:len(words)]
        assert sorted(w for w in words for f in top if w in f["content"].lower()) == \
            sorted(words), (query, best)
        for fact in top:
            assert fact["conversations"], fact
            assert set(fact["conversations"]) <= {c for w in words for c in stating(entity, w)}
            assert fact["entity_id"] == entity["entity_id"]
            assert isinstance(fact["first_seen"], datetime)
            assert fact["first_seen"] <= fact["last_seen"]
            assert (fact["id"] is None) == (kind == "duckdb")
    m.close()


def test_both_stores_rank_alike(tmp_path, model):
    data = sample()
    recalled = {}
    for kind in STORES:
        m = Memori(conn=conn_for(kind, tmp_path), backend="local", embedder=model)
        asyncio.run(m.seed([SeedData.for_conversations(entity_id=e["entity_id"],
                                                       conversations=e["conversations"])
                            for e in data]))
        recalled[kind] = [(f["content"], f["score"], f["conversations"])
                          for query in ("where does she work?", "hobbies", "family")
                          for f in m.recall(query, entity_id="user-ana", limit=5)]
        m.close()
    for ours, theirs in zip(recalled["duckdb"], recalled["sqlite"], strict=True):
        assert ours[0] == theirs[0] and ours[2] == theirs[2]
        assert ours[1] == pytest.approx(theirs[1], abs=1e-5)


def test_a_fact_stated_in_several_conversations_lists_them_earliest_first(store, model):
    _, conn = store
    m = Memori(conn=conn, backend=StatedFacts(), embedder=model)
    day = datetime(2024, 5, 1, tzinfo=timezone.utc)
    seed(m, "ann", said("late", "user likes jazz", at=day + timedelta(days=9)),
         said("early", "user likes jazz", "user lives_in Lisbon", at=day))
    best, = m.recall("what music does the user like?", entity_id="ann", limit=1)
    assert best["content"] == "user likes jazz"
    assert best["conversations"] == ["early", "late"]
    m.close()


def test_duckdb_embeds_on_first_recall_only_what_has_no_vector_deduplicated_by_text(tmp_path,
                                                                                   model):
    path = str(tmp_path / "m.duckdb")
    recorder = Recording(model)
    m = Memori(conn=path, backend=StatedFacts(), embedder=recorder)
    seed(m, "ann", said("a1", "user likes jazz", "user lives_in Lisbon", "user has_dog Rex"))
    seed(m, "bob", said("b1", "user likes jazz", "user lives_in Oslo"))
    # Seeding embeds nothing: users who never recall never pay for it.
    assert recorder.texts == []
    assert m.sql("SELECT count(*) AS n FROM fact_embeddings").n[0] == 0

    assert m.recall("pets", entity_id="ann")[0]["content"] == "user has_dog Rex"
    assert sorted(recorder.texts) == sorted(["pets", "user likes jazz", "user lives_in Lisbon",
                                             "user has_dog Rex"])
    recorder.texts.clear()
    m.recall("where does the user live?", entity_id="ann")
    assert recorder.texts == ["where does the user live?"]  # the facts' vectors are kept

    recorder.texts.clear()
    assert m.recall("where does the user live?", entity_id="bob")[0]["content"] == \
        "user lives_in Oslo"
    # "user likes jazz" is ann's too: its vector is shared, not computed again.
    assert sorted(recorder.texts) == ["user lives_in Oslo", "where does the user live?"]
    stored = m.sql("SELECT fact, count(*) AS n FROM fact_embeddings GROUP BY fact")
    assert sorted(stored.fact) == ["user has_dog Rex", "user likes jazz", "user lives_in Lisbon",
                                   "user lives_in Oslo"] and set(stored.n) == {1}
    m.close()

    # Kept in the file: a new session recalls without embedding any fact.
    recorder = Recording(model)
    again = Memori(conn=path, backend="local", embedder=recorder)
    assert again.recall("music", entity_id="bob")[0]["content"] == "user likes jazz"
    assert recorder.texts == ["music"]
    again.close()


def test_duckdb_a_fact_whose_vector_is_missing_gets_one_at_the_next_recall(tmp_path, model):
    recorder = Recording(model)
    m = Memori(conn=str(tmp_path / "m.duckdb"), backend=StatedFacts(), embedder=recorder)
    seed(m, "ann", said("a1", "user likes jazz", "user has_dog Rex"))
    m.recall("pets")
    m.sql("DELETE FROM fact_embeddings WHERE fact = 'user has_dog Rex'")
    recorder.texts.clear()
    assert m.recall("pets")[0]["content"] == "user has_dog Rex"
    assert recorder.texts == ["pets", "user has_dog Rex"]
    stored = m.sql("SELECT fact, array_length(embedding) AS dims FROM fact_embeddings")
    assert sorted(stored.fact) == ["user has_dog Rex", "user likes jazz"]
    assert set(stored.dims) == {emb.EMBEDDING_DIM}
    m.close()


def test_duckdb_recalls_from_a_database_built_before_recall_existed_or_read_only(tmp_path, model):
    path = str(tmp_path / "m.duckdb")
    m = Memori(conn=path, backend=StatedFacts(), embedder=model)
    seed(m, "ann", said("a1", "user likes jazz", "user has_dog Rex"))
    m.sql("DROP TABLE fact_embeddings")
    m.close()
    m = Memori(conn=path, backend="local", embedder=model)  # no run builds it
    assert m.recall("pets")[0]["content"] == "user has_dog Rex"
    m.close()
    # Once the vectors are there, a read-only connection recalls too.
    read_only = duckdb.connect(path, read_only=True)
    m = Memori(conn=read_only, backend="local", embedder=model)
    assert m.recall("music")[0]["content"] == "user likes jazz"
    read_only.close()


def test_duckdb_read_only_before_the_vectors_exist_says_what_to_do(tmp_path, model):
    path = str(tmp_path / "m.duckdb")
    m = Memori(conn=path, backend=StatedFacts(), embedder=model)
    seed(m, "ann", said("a1", "user likes jazz", "user has_dog Rex"))
    m.close()
    read_only = duckdb.connect(path, read_only=True)
    m = Memori(conn=read_only, backend="local", embedder=model)
    with pytest.raises(StoreError, match="2 facts of 'ann' have no embedding yet.*read-only"):
        m.recall("music")
    assert m.recall("music", entity_id="nobody") == []
    read_only.close()


def test_a_refused_recall_leaves_the_store_usable(tmp_path, model):
    m = Memori(conn=str(tmp_path / "m.duckdb"), backend=StatedFacts(), embedder=model)
    seed(m, "ann", said("a1", "user likes jazz"))
    seed(m, "bob", said("b1", "user likes tea"))
    with pytest.raises(ConfigurationError, match="2 entities"):
        m.sources("what music?")
    assert m.sources("what music?", entity_id="ann").fact.tolist() == ["user likes jazz"]
    m.close()


@pytest.mark.parametrize("kind", STORES)
def test_only_the_entitys_most_recent_facts_are_candidates(kind, tmp_path, model):
    recorder = Recording(model)
    m = Memori(conn=conn_for(kind, tmp_path), backend=StatedFacts(), embedder=recorder)
    long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)
    seed(m, "ann", said("old", "user lives_in Lisbon", at=long_ago))
    newer = [f"user counted item {i}" for i in range(RECALL_FACTS)]
    seed(m, "ann", *[said(f"new{i}", *newer[i:i + 100], at=long_ago + timedelta(days=1 + i))
                     for i in range(0, RECALL_FACTS, 100)])
    recorder.texts.clear()
    found = [f["content"] for f in m.recall("where does the user live in Lisbon?", limit=50)]
    # As Memori: the 1,001st most recent fact is not read, however well it matches.
    assert "user lives_in Lisbon" not in found and len(found) == 50
    if kind == "duckdb":  # only the candidates were embedded
        assert len(recorder.texts) == RECALL_FACTS + 1
        assert "user lives_in Lisbon" not in recorder.texts
    m.close()


def test_the_entity_defaults_to_the_attributed_one_else_the_only_one(store, model):
    _, conn = store
    m = Memori(conn=conn, backend=StatedFacts(), embedder=model)
    m.config.storage.build()
    with pytest.raises(ConfigurationError, match="holds none yet"):
        m.recall("pets")
    seed(m, "ann", said("a1", "user has_dog Rex"))
    assert m.recall("pets")[0]["entity_id"] == "ann"
    seed(m, "bob", said("b1", "user has_cat Miso"), said("b2", "user lives_in Oslo"))
    with pytest.raises(ConfigurationError, match=r"holds 2 entities; pass entity_id="):
        m.recall("pets")
    m.attribution(entity_id="bob")
    assert m.recall("pets")[0]["content"] == "user has_cat Miso"
    assert m.recall("pets", entity_id="ann")[0]["content"] == "user has_dog Rex"
    assert m.recall("pets", entity_id="nobody") == []
    m.close()


@pytest.mark.parametrize("kind", STORES)
def test_bad_arguments_are_refused_before_anything_is_embedded(kind, tmp_path, model):
    recorder = Recording(model)
    m = Memori(conn=conn_for(kind, tmp_path), backend=StatedFacts(), embedder=recorder)
    seed(m, "ann", said("a1", "user has_dog Rex"))
    recorder.texts.clear()
    for limit in (0, -1, "3", 2.5, True):
        with pytest.raises(ConfigurationError, match="limit must be a whole number"):
            m.recall("pets", limit=limit)
    for query in ("", "   ", None):
        with pytest.raises(ConfigurationError, match="recall needs a query"):
            m.recall(query)
    assert recorder.texts == []
    m.close()


def test_duckdb_without_the_embedding_packages_seeds_and_says_what_to_install(tmp_path,
                                                                            monkeypatch):
    installed = emb._package_dir
    monkeypatch.delenv(emb.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(emb, "_package_dir", lambda name: None)  # no model package
    m = Memori(conn=str(tmp_path / "m.duckdb"), backend="local")
    seed(m, "ann", said("a1", "I have a dog named Rex."))
    assert m.facts().fact.tolist() == ["user has_dog Rex"]
    with pytest.raises(ConfigurationError, match=r"pip install 'memori_nb\[recall\]'"):
        m.recall("pets")
    monkeypatch.setattr(emb, "_package_dir", installed)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"onnxruntime is missing.*memori_nb\[recall\]"):
        m.recall("pets")
    assert m.sql("SELECT count(*) AS n FROM fact_embeddings").n[0] == 0
    m.close()


@pytest.mark.parametrize("kind", STORES)
def test_the_notebook_helper_gives_a_dataframe(kind, tmp_path, model, monkeypatch):
    conn = conn_for(kind, tmp_path)
    m = Memori(conn=conn, backend=StatedFacts(), embedder=model)
    seed(m, "ann", said("a1", "user has_dog Rex", "user lives_in Lisbon"))
    m.close()
    # The helper opens the store itself, with the default embedder: the same model.
    monkeypatch.setattr(emb, "Embedder", lambda: model)
    frame = recall_frame("where does the user live?", db=conn, limit=2)
    assert frame.columns.tolist() == ["content", "score", "similarity", "conversations",
                                      "first_seen", "last_seen", "date_last_time", "entity_id",
                                      "id"]
    assert frame.content.tolist()[0] == "user lives_in Lisbon" and len(frame) == 2
    assert frame.conversations[0] == ["a1"] and frame.entity_id[0] == "ann"


def test_duckdb_ranks_in_sql_with_native_arrays(tmp_path, model):
    store = DuckDBStore(str(tmp_path / "m.duckdb"), embedder=model)
    store.build()
    column = store.sql("SELECT data_type FROM information_schema.columns WHERE "
                       "table_name = 'fact_embeddings' AND column_name = 'embedding'")
    assert column.data_type[0] == "FLOAT[384]"
    m = Memori(conn=store, backend=StatedFacts())
    seed(m, "ann", said("a1", "user has_dog Rex", "user lives_in Lisbon"))
    query = model.embed(["where does the user live?"])[0]
    (fact, similarity, _), (other, lower, _) = store.similar_facts("ann", query, pool=5)
    assert fact == "user lives_in Lisbon" and other == "user has_dog Rex"
    assert similarity == pytest.approx(float(model.embed([fact])[0] @ query), abs=1e-5)
    assert similarity > lower
    store.close()


def test_an_id_or_query_with_what_no_store_holds_finds_what_was_seeded(store, model):
    """Seeding stores an entity id with a lone surrogate as U+FFFD, trimmed: looking it up
    by the id as given finds it, in facts, recall and sources; a query with one is read
    the same way (the tokenizer refuses it as it is)."""
    kind, conn = store
    m = Memori(conn=conn, backend=StatedFacts(), embedder=model)
    seed(m, " ana\ud800 ", said("c1", "user lives in Lisbon"))
    given = " ana\ud800 "
    assert m.facts(given).fact.tolist() == ["user lives in Lisbon"]
    assert [hit["content"] for hit in m.recall("where does she live?", entity_id=given)] == [
        "user lives in Lisbon"]
    assert [hit["content"] for hit in m.recall("where \ud800 live?", entity_id=given)] == [
        "user lives in Lisbon"]
    assert m.sources("user lives in Lisbon", entity_id=given).conversation_id.tolist() == ["c1"]
    assert m.attribution(entity_id=given).recall("Lisbon")[0]["entity_id"] == "ana\ufffd"
