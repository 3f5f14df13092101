"""Provenance: which messages stated a fact, their source times, and m.sources()."""

import asyncio

import duckdb
import pandas as pd
import pytest

from memori_nb import Memori, SeedData
from memori_nb import notebook
from memori_nb.models import Extraction, Message
from memori_nb.provenance import MAX_SOURCES, excerpt, fact_words, locate, with_sources
from memori_nb.stores import DuckDBStore


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str) -> Message:
    return Message(role="assistant", content=text)


# --- locate ---------------------------------------------------------------------------------

def test_the_users_message_is_the_source_not_the_assistants_echo():
    messages = [user("Hi there"), user("I live in Lisbon now."),
                assistant("Lisbon is lovely! Do you live near the river in Lisbon?")]
    assert locate(["user lives_in Lisbon"], messages) == [(1,)]


def test_an_assistant_message_is_the_source_when_no_user_message_states_it():
    messages = [user("Can you recommend a Korean cookbook?"),
                assistant("Since you are learning Korean cooking, try 'Maangchi'.")]
    # The user's message holds an object word ("korean"), so it counts, and a user message
    # that counts is preferred to the assistant's, which holds more of the words.
    assert locate(["user is_learning Korean cooking"], messages) == [(0,)]
    assert locate(["user owns Maangchi"], messages) == [(1,)]


def test_words_match_in_their_inflected_forms():
    messages = [user("Last year I was studying physics."), user("I liked hiking a lot."),
                user("We planned it.")]
    assert locate(["user studies physics", "user likes hike", "user plans trip"],
                  messages) == [(0,), (1,), ()]


def test_a_message_needs_an_object_word_and_the_best_ones_win():
    messages = [user("I live somewhere nice."), user("Cape Town is far."),
                user("I live in Cape Town."), user("Yes, I live in Cape Town!")]
    # Message 0 holds only the predicate; 1 the object; 2 and 3 both: they tie for the best.
    assert locate(["user lives_in Cape Town"], messages) == [(2, 3)]


def test_at_most_max_sources_messages_are_given():
    messages = [user("I love tea.")] * (MAX_SOURCES + 3)
    assert locate(["user loves tea"], messages) == [tuple(range(MAX_SOURCES))]


def test_nothing_found_gives_an_empty_tuple_and_no_facts_no_work():
    assert locate(["user owns a boat"], [user("Hello"), assistant("Hi!")]) == [()]
    assert locate([], [user("I own a boat")]) == []


def test_words_of_scripts_without_spaces_and_accents_are_found():
    messages = [user("こんにちは"), user("私は寿司が大好きです"), user("I was born in Québec City")]
    assert locate(["user likes 寿司", "user is_from Québec City"], messages) == [(1,), (2,)]


def test_a_word_inside_another_word_does_not_count():
    assert locate(["user owns cat"], [user("I read a catalogue."), user("My cat sleeps.")]) \
        == [(1,)]


def test_positions_a_backend_reported_are_kept_and_only_the_others_looked_for():
    messages = [user("I live in Lisbon."), user("Lisbon, yes: I live in Lisbon!"),
                user("I have a dog named Rex.")]
    known = {"user lives_in Lisbon": (0,)}
    assert locate(["user lives_in Lisbon", "user has_dog Rex"], messages, known) == [
        (0,), (2,)]


def test_an_extractions_sources_keep_what_the_backend_said_and_add_the_others():
    # What the engine does as a conversation finishes: the stores then take them as they are.
    messages = [user("I live in Lisbon."), user("Lisbon, yes: I live in Lisbon!"),
                user("I have a dog named Rex.")]
    said = Extraction(facts=("user lives_in Lisbon", "user has_dog Rex"),
                      sources=(("user lives_in Lisbon", (1,)),))
    complete = with_sources(said, messages)
    assert complete.sources == (("user lives_in Lisbon", (1,)), ("user has_dog Rex", (2,)))
    assert with_sources(complete, messages) is complete
    assert with_sources(Extraction(), messages).sources == ()


def test_the_local_extractor_says_which_messages_stated_each_fact():
    from memori_nb.backends.local import extract
    messages = [user("I live in Lisbon."), assistant("Lisbon! I live in Lisbon too."),
                user("Still, I live in Lisbon."), user("I have a dog named Rex.")]
    assert dict(extract(messages).sources) == {"user lives_in Lisbon": (0, 2),
                                               "user has_dog Rex": (3,)}


def test_a_split_conversation_is_located_in_the_whole_conversation(tmp_path):
    # Chunks have positions of their own: the store locates the facts in the conversation.
    from memori_nb import SeedConfig
    m = Memori(conn=str(tmp_path / "m.duckdb"), backend="local")
    m.config.storage.build()
    talk = [{"role": "user", "content": f"Message {i} about nothing."} for i in range(7)]
    talk.append({"role": "user", "content": "I have a dog named Rex."})
    data = SeedData.for_conversations(entity_id="u1", conversations=[{"id": "c1",
                                                                      "messages": talk}])
    result = asyncio.run(m.seed(data, seed_config=SeedConfig(max_messages_per_request=3)))
    assert result.results[0].chunks_processed == 3
    assert m.store.fact_sources("u1")[["fact", "position"]].values.tolist() == [
        ["user has_dog Rex", 7]]
    m.close()


def test_fact_words_drop_the_subject_and_split_the_predicate():
    assert fact_words("user is_allergic_to pollen") == (["pollen"], ["allergic"])
    assert fact_words("likes green tea") == (["likes", "green", "tea"], [])


def test_an_excerpt_is_the_part_around_the_facts_words():
    text = "filler " * 200 + "By the way, I live in Lisbon with my cat. " + "more " * 200
    cut = excerpt(text, "user lives_in Lisbon")
    assert cut.startswith("…") and cut.endswith("…") and "Lisbon" in cut
    assert len(cut) <= 302
    assert excerpt("Short\n\n text.", "user likes tea") == "Short text."


# --- the stores -----------------------------------------------------------------------------

TESLA = {"id": "c1", "messages": [
    {"role": "user", "content": "Hello!", "timestamp": "2023-05-01T09:59:00Z"},
    {"role": "user", "content": "I just bought a Tesla Model 3! I live in Lisbon.",
     "timestamp": "2023-05-01T10:00:00Z"},
    {"role": "assistant", "content": "Congratulations on the Tesla Model 3!",
     "timestamp": "2023-05-01T10:00:05Z"}]}
SURF = {"id": "c2", "messages": [
    {"role": "user", "content": "I live in Lisbon and I love surfing.",
     "timestamp": "2024-02-03T08:00:00Z"},
    {"role": "assistant", "content": "Nice.", "timestamp": "2024-02-03T08:00:09Z"}]}
UNDATED = {"id": "c3", "messages": [{"role": "user", "content": "I have a dog named Rex."}]}


def seed(m: Memori, conversations, *, entity="u1", force=False):
    data = SeedData.for_conversations(entity_id=entity, conversations=conversations)
    return asyncio.run(m.seed(data, force=force))


@pytest.fixture(params=["duckdb", "sqlite", "postgresql"])
def memori(request, tmp_path):
    if request.param == "duckdb":
        conn = str(tmp_path / "m.duckdb")
    else:
        pytest.importorskip("onnxruntime")
        conn = (f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite"
                else request.getfixturevalue("pg_url"))
    m = Memori(conn=conn, backend="local")
    m.config.storage.build()
    yield m
    m.close()


def by_fact(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("fact")


def test_fact_times_are_when_the_user_said_it_and_seeding_times_are_kept(memori):
    seed(memori, [TESLA, SURF, UNDATED])
    facts = by_fact(memori.facts("u1"))
    assert list(memori.facts().columns) == ["entity_id", "fact", "mention_count", "first_seen",
                                            "last_seen", "first_seeded", "last_seeded"]
    tesla, lisbon = facts.loc["user owns Tesla Model 3"], facts.loc["user lives_in Lisbon"]
    assert str(tesla.first_seen) == str(tesla.last_seen) == "2023-05-01 10:00:00"
    assert str(lisbon.first_seen) == "2023-05-01 10:00:00"
    assert str(lisbon.last_seen) == "2024-02-03 08:00:00"
    # A conversation without times gives no source time; it was seeded all the same.
    rex = facts.loc["user has_dog Rex"]
    assert pd.isna(rex.first_seen) and pd.isna(rex.last_seen)
    assert facts.first_seeded.notna().all() and facts.last_seeded.notna().all()


def test_fact_sources_show_each_fact_beside_the_turns_that_stated_it(memori):
    seed(memori, [TESLA, SURF, UNDATED])
    sources = memori.store.fact_sources("u1")
    assert list(sources.columns) == ["entity_id", "fact", "conversation_id", "position", "role",
                                     "said_at", "message"]
    lisbon = sources[sources.fact == "user lives_in Lisbon"]
    assert lisbon[["conversation_id", "position", "role"]].values.tolist() == [
        ["c1", 1, "user"], ["c2", 0, "user"]]
    assert [str(t) for t in lisbon.said_at] == ["2023-05-01 10:00:00", "2024-02-03 08:00:00"]
    assert lisbon.message.tolist() == ["I just bought a Tesla Model 3! I live in Lisbon.",
                                       "I live in Lisbon and I love surfing."]
    rex = memori.store.fact_sources(facts=["user has_dog Rex"])
    assert rex[["entity_id", "conversation_id", "position", "role"]].values.tolist() == [
        ["u1", "c3", 0, "user"]]
    assert pd.isna(rex.said_at[0])
    assert memori.store.fact_sources("nobody").empty


def test_a_fact_no_message_holds_has_one_row_without_a_message(tmp_path):
    store = DuckDBStore(tmp_path / "m.duckdb")
    store.build()
    from test_store import ok  # a record whose extraction names words no message has

    from memori_nb.models import Conversation
    record = ok("c1", facts=["user owns a yacht"])
    conversation = Conversation(id="c1", messages=(user("Hello"),))
    store.write("r1", [type(record)(record.result, record.content_hash, None,
                                    record.extraction, conversation)])
    sources = store.fact_sources()
    assert sources[["fact", "conversation_id"]].values.tolist() == [["user owns a yacht", "c1"]]
    assert sources[["position", "role", "said_at", "message"]].isna().all(axis=None)
    store.close()


def test_a_dead_runs_journal_replayed_into_the_store_keeps_the_sources(tmp_path):
    from test_journal import SAID, dead_run, finished_record

    from memori_nb.stores.journal import journal_beside, replay
    db = tmp_path / "m.duckdb"
    store = DuckDBStore(str(db))
    store.build()
    dead_run(db, finished_record("c1", "user lives in Lisbon"))
    assert replay(journal_beside(str(db)), store) == 1
    sources = store.fact_sources("u1")
    assert sources[["conversation_id", "position", "role"]].values.tolist() == [
        ["c1", 0, "user"]]
    assert sources.said_at[0] == SAID.replace(tzinfo=None)
    assert store.facts().first_seen[0] == SAID.replace(tzinfo=None)
    store.close()


CHANGED = {"id": "c1", "messages": [
    {"role": "user", "content": "Small talk first.", "timestamp": "2023-06-01T10:00:00Z"},
    {"role": "user", "content": "I live in Lisbon.", "timestamp": "2023-06-01T10:01:00Z"}]}


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_a_conversation_seeded_again_with_new_content_leaves_times_as_after_one_run(tmp_path,
                                                                                     kind):
    def open_memori(name):
        if kind == "sqlite":
            pytest.importorskip("onnxruntime")
        conn = (str(tmp_path / f"{name}.duckdb") if kind == "duckdb"
                else f"sqlite:///{tmp_path / name}.db")
        m = Memori(conn=conn, backend="local")
        m.config.storage.build()
        return m

    reseeded, once = open_memori("reseeded"), open_memori("once")
    seed(reseeded, [TESLA, SURF])
    seed(reseeded, [CHANGED], force=True)
    seed(once, [SURF, CHANGED])
    columns = ["entity_id", "fact", "mention_count", "first_seen", "last_seen"]
    assert reseeded.facts()[columns].values.tolist() == once.facts()[columns].values.tolist()
    assert str(by_fact(reseeded.facts()).loc["user lives_in Lisbon", "first_seen"]) == \
        "2023-06-01 10:01:00"
    source_columns = ["fact", "conversation_id", "position", "said_at", "message"]
    assert reseeded.store.fact_sources()[source_columns].values.tolist() == \
        once.store.fact_sources()[source_columns].values.tolist()
    reseeded.close()
    once.close()


def test_an_older_duckdb_file_moves_its_seeding_times_and_gains_source_times(tmp_path):
    path = str(tmp_path / "old.duckdb")
    conn = duckdb.connect(path)
    # The tables as an earlier version built them (only those that matter here).
    conn.execute("""
        CREATE TABLE conversations (
            entity_id VARCHAR NOT NULL, conversation_id VARCHAR NOT NULL, title VARCHAR,
            content_hash VARCHAR, message_count INTEGER, started_at TIMESTAMP,
            ended_at TIMESTAMP, run_id VARCHAR, seeded_at TIMESTAMP);
        CREATE TABLE facts (
            entity_id VARCHAR NOT NULL, fact VARCHAR NOT NULL, mention_count BIGINT,
            first_seen TIMESTAMP, last_seen TIMESTAMP);
        CREATE TABLE fact_mentions (entity_id VARCHAR, conversation_id VARCHAR, fact VARCHAR);
        INSERT INTO conversations VALUES
            ('u1', 'c1', NULL, 'h1', 2, '2023-01-01 10:00', '2023-01-01 10:05', 'r0', NULL),
            ('u1', 'c2', NULL, 'h2', 2, '2023-03-01 09:00', '2023-03-01 09:30', 'r0', NULL),
            ('u1', 'c3', NULL, 'h3', 1, NULL, NULL, 'r0', NULL);
        INSERT INTO facts VALUES
            ('u1', 'user likes tea', 2, '2025-01-01 00:00', '2025-01-02 00:00'),
            ('u1', 'user owns a boat', 1, '2025-01-03 00:00', '2025-01-03 00:00');
        INSERT INTO fact_mentions VALUES ('u1', 'c1', 'user likes tea'),
            ('u1', 'c2', 'user likes tea'), ('u1', 'c3', 'user owns a boat');
    """)
    conn.close()

    for _ in range(2):  # a second build changes nothing
        store = DuckDBStore(path)
        store.build()
        facts = by_fact(store.facts())
        assert [str(t) for t in facts.loc["user likes tea", ["first_seen", "last_seen",
                                                             "first_seeded", "last_seeded"]]] \
            == ["2023-01-01 10:00:00", "2023-03-01 09:30:00", "2025-01-01 00:00:00",
                "2025-01-02 00:00:00"]
        boat = facts.loc["user owns a boat"]
        assert pd.isna(boat.first_seen) and str(boat.first_seeded) == "2025-01-03 00:00:00"
        # The old mentions' messages are unknown: one row each, without a message.
        sources = store.fact_sources(facts=["user likes tea"])
        assert sources.conversation_id.tolist() == ["c1", "c2"]
        assert sources.position.isna().all()
        store.close()


def test_mentions_an_earlier_sql_store_wrote_show_their_conversations(tmp_path):
    pytest.importorskip("onnxruntime")
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local")
    seed(m, [TESLA, SURF])
    # As an earlier version left them: mentions, no located messages.
    m.sql("DELETE FROM memori_nb_fact_sources")
    sources = m.store.fact_sources("u1", ["user lives_in Lisbon"])
    assert sources.conversation_id.tolist() == ["c1", "c2"]
    assert sources[["position", "role", "said_at", "message"]].isna().all(axis=None)
    # Fact times fall back to the span of the conversations that stated it.
    lisbon = by_fact(m.facts()).loc["user lives_in Lisbon"]
    assert [str(lisbon.first_seen), str(lisbon.last_seen)] == ["2023-05-01 09:59:00",
                                                               "2024-02-03 08:00:09"]
    m.close()


# --- m.sources ------------------------------------------------------------------------------

def test_sources_of_a_stored_fact(tmp_path):
    m = Memori(conn=str(tmp_path / "m.duckdb"), backend="local")
    seed(m, [TESLA, SURF])
    sources = m.sources("user lives_in Lisbon", entity_id="u1")
    assert sources.conversation_id.tolist() == ["c1", "c2"]
    assert set(sources.fact) == {"user lives_in Lisbon"}
    m.close()
    # The notebook helper opens the file itself; the entity is the only one there.
    assert notebook.sources("user owns Tesla Model 3", db=str(tmp_path / "m.duckdb")) \
        .position.tolist() == [1]


def test_sources_of_a_question_are_those_of_the_recalled_facts(tmp_path):
    pytest.importorskip("onnxruntime")
    m = Memori(conn=f"sqlite:///{tmp_path / 'm.db'}", backend="local")
    m.attribution(entity_id="u1")
    seed(m, [TESLA, SURF, UNDATED])
    sources = m.sources("where does the user live?", limit=1)
    assert set(sources.fact) == {"user lives_in Lisbon"}
    assert sources.message.str.contains("Lisbon").all()
    m.close()
