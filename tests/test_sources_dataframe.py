"""DataFrames in, DataFrames out: loading long and nested frames, chunking statistics, plots."""

import doctest
import math
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dataclasses

import memori_nb.plots
import memori_nb.sources.dataframe
import memori_nb.stats
from memori_nb.chunking import plan_seeds, total_plan
from memori_nb.errors import ConfigurationError, InvalidInputError
from memori_nb.models import Conversation, Message, SeedConfig, SeedData
from memori_nb.plots import plot_chunking_stats
from memori_nb.sources.dataframe import from_dataframe as read_frame
from memori_nb.stats import STATS_COLUMNS, TOTALS_COLUMNS, chunking_stats, stats_totals
from memori_nb.validation import Invalid, check_conversations


def from_dataframe(df, **kwargs):
    """The reader's SeedData with each raw conversation judged, as a run judges them."""
    return [dataclasses.replace(seed, conversations=[c for _, c in check_conversations(seed)])
            for seed in read_frame(df, **kwargs)]

UTC = timezone.utc


def long_frame(rows, columns=("entity_id", "conversation_id", "role", "content")):
    return pd.DataFrame.from_records(rows, columns=list(columns))


def contents(conversation):
    return [m.content for m in conversation.messages]


def by_id(seed):
    return {c.conversation_id if isinstance(c, Invalid) else c.id: c
            for c in seed.conversations}


# --- long format ---------------------------------------------------------------------------


def test_long_frame_messages_are_ordered_by_timestamp_stably():
    df = pd.DataFrame({
        "entity_id": "u1",
        "conversation_id": ["c1"] * 4 + ["c2"] * 3,
        "role": ["user", "assistant", "assistant", "user", "user", "assistant", "user"],
        "content": ["third", "first", "second (tie, row 2)", "second (tie, row 3)",
                    "c2 a", "c2 b (no time)", "c2 c"],
        "timestamp": ["2024-05-01T10:02:00Z", "2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z",
                      "2024-05-01T12:01:00+02:00", "2024-05-01T10:05:00Z", None,
                      "2024-05-01T10:00:00Z"],
    })
    [seed] = from_dataframe(df)
    c1, c2 = seed.conversations
    assert contents(c1) == ["first", "second (tie, row 2)", "second (tie, row 3)", "third"]
    stamps = [m.timestamp for m in c1.messages]
    assert stamps == [datetime(2024, 5, 1, 10, m, tzinfo=UTC) for m in (0, 1, 1, 2)]
    assert all(s.tzinfo is UTC for s in stamps)
    # A message of unknown time: moving it to either end would be a guess, so the
    # conversation keeps its rows' order.
    assert contents(c2) == ["c2 a", "c2 b (no time)", "c2 c"]
    assert c2.messages[1].timestamp is None


def test_long_frame_without_timestamps_keeps_row_order_within_each_conversation():
    df = long_frame([("u1", "c2", "user", "c2 first"), ("u1", "c1", "user", "c1 first"),
                     ("u1", "c2", "assistant", "c2 second"),
                     ("u1", "c1", "assistant", "c1 second"), ("u1", "c2", "user", "c2 third")])
    [seed] = from_dataframe(df)
    assert [c.id for c in seed.conversations] == ["c2", "c1"]
    assert contents(seed.conversations[0]) == ["c2 first", "c2 second", "c2 third"]
    assert contents(seed.conversations[1]) == ["c1 first", "c1 second"]
    assert all(m.timestamp is None for c in seed.conversations for m in c.messages)
    assert [m.role for m in seed.conversations[0].messages] == ["user", "assistant", "user"]


def test_timestamps_of_every_kind_become_utc_datetimes():
    base = datetime(2024, 3, 2, 9, 14, tzinfo=UTC)
    frames = {
        "iso strings": ["2024-03-02T09:14:00Z", "2024-03-02T10:14:00+01:00"],
        "naive strings are utc": ["2024-03-02 09:14:00", "2024-03-02T09:14:00"],
        "datetime64 naive": pd.to_datetime(["2024-03-02 09:14", "2024-03-02 09:14"]),
        "datetime64 tz": pd.to_datetime(["2024-03-02 10:14", "2024-03-02 10:14"]).tz_localize(
            "Europe/Paris"),
        "epoch seconds": [base.timestamp(), int(base.timestamp())],
        "python datetimes": [base, base.astimezone(timezone(timedelta(hours=-5)))],
        "mixed objects": pd.Series([base.isoformat(), int(base.timestamp())], dtype=object),
    }
    for name, stamps in frames.items():
        df = pd.DataFrame({"conversation_id": ["c1", "c1"], "role": ["user", "assistant"],
                           "content": ["a", "b"], "timestamp": stamps})
        [seed] = from_dataframe(df, entity_id="u1")
        [conversation] = seed.conversations
        assert isinstance(conversation, Conversation), name
        for message in conversation.messages:
            assert message.timestamp == base, name
            assert type(message.timestamp) is datetime and message.timestamp.tzinfo is UTC


def test_sub_second_timestamps_are_exact():
    stamp = datetime(2023, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    df = pd.DataFrame({"conversation_id": ["c1"], "role": ["user"], "content": ["a"],
                       "timestamp": [stamp.isoformat()]})
    [seed] = from_dataframe(df, entity_id="u1")
    assert seed.conversations[0].messages[0].timestamp == stamp


def test_columns_are_renamed_with_keywords():
    df = pd.DataFrame({"user": ["ana", "ana", "bo"], "thread": ["t1", "t1", "t9"],
                       "speaker": ["user", "assistant", "user"],
                       "text": ["I run marathons.", "Impressive!", "I have two cats."],
                       "sent": ["2024-01-01T00:00:02", "2024-01-01T00:00:01",
                                "2024-01-01T00:00:00"],
                       "subject": ["Running", None, "Pets"]})
    seeds = from_dataframe(df, entity_col="user", conversation_col="thread", role_col="speaker",
                           content_col="text", timestamp_col="sent", title_col="subject",
                           process_id="support-bot")
    assert [(s.entity_id, s.process_id) for s in seeds] == [("ana", "support-bot"),
                                                            ("bo", "support-bot")]
    [t1] = seeds[0].conversations
    assert (t1.id, t1.title) == ("t1", "Running")
    assert contents(t1) == ["Impressive!", "I run marathons."]
    assert seeds[1].conversations[0].title == "Pets"


def test_entity_id_keyword_serves_a_frame_without_an_entity_column():
    df = pd.DataFrame({"conversation_id": ["c1", "c2"], "role": ["user", "user"],
                       "content": ["hello", "hi"]})
    [seed] = from_dataframe(df, entity_id="user-42")
    assert isinstance(seed, SeedData)
    assert seed.entity_id == "user-42"
    assert [c.id for c in seed.conversations] == ["c1", "c2"]


def test_entity_id_keyword_with_an_entity_column_is_ambiguous():
    df = long_frame([("u1", "c1", "user", "hello")])
    with pytest.raises(InvalidInputError, match="entity column 'entity_id'.*entity_id='u2'"):
        from_dataframe(df, entity_id="u2")


def test_entities_split_in_order_of_first_appearance():
    df = long_frame([("bo", "c1", "user", "bo c1 a"), ("ana", "c7", "user", "ana c7"),
                     ("bo", "c3", "user", "bo c3"), ("ana", "c1", "user", "ana c1"),
                     ("bo", "c1", "assistant", "bo c1 b"), ("cy", "c1", "user", "cy c1")])
    seeds = from_dataframe(df)
    assert [s.entity_id for s in seeds] == ["bo", "ana", "cy"]
    assert [[c.id for c in s.conversations] for s in seeds] == [["c1", "c3"], ["c7", "c1"],
                                                                 ["c1"]]
    # The same conversation id under two entities is two conversations.
    assert contents(seeds[0].conversations[0]) == ["bo c1 a", "bo c1 b"]
    assert contents(seeds[1].conversations[1]) == ["ana c1"]


def test_numeric_ids_become_strings():
    df = pd.DataFrame({"entity_id": [7, 7, 8], "conversation_id": [17.0, 17.0, 2.0],
                       "role": ["user", "assistant", "user"], "content": ["a", "b", "c"]})
    seeds = from_dataframe(df)
    assert [s.entity_id for s in seeds] == ["7", "8"]
    assert [c.id for c in seeds[0].conversations] == ["17"]
    assert seeds[1].conversations[0].id == "2"
    mixed = pd.DataFrame({"conversation_id": pd.Series([17, "17", 3.5], dtype=object),
                          "role": ["user"] * 3, "content": ["a", "b", "c"]})
    [seed] = from_dataframe(mixed, entity_id="u")
    # 17 and "17" read the same, so they are one conversation.
    assert [(c.id, len(c.messages)) for c in seed.conversations] == [("17", 2), ("3.5", 1)]


def test_messages_equal_ordinarily_built_ones():
    stamp = "2024-01-01T00:00:00Z"
    df = pd.DataFrame({"conversation_id": ["c1"], "role": ["user"], "content": ["hi"],
                       "timestamp": [stamp], "title": ["Greeting"]})
    [seed] = from_dataframe(df, entity_id="u1")
    expected = Conversation(id="c1", title="Greeting", messages=(Message(
        role="user", content="hi", timestamp=datetime(2024, 1, 1, tzinfo=UTC)),))
    assert seed.conversations[0] == expected
    assert hash(seed.conversations[0].messages[0]) == hash(expected.messages[0])
    assert seed.conversations[0].content_hash() == expected.content_hash()
    with pytest.raises(AttributeError):
        seed.conversations[0].messages[0].content = "changed"  # still frozen


# --- nested format -------------------------------------------------------------------------


def test_nested_frame_one_row_per_conversation():
    df = pd.DataFrame({
        "entity_id": ["ana", "bo", "ana"],
        "id": ["c1", "c2", 3],
        "title": ["Trip", None, "Books"],
        "messages": [
            [{"role": "user", "content": "I fly to Tokyo on Friday.",
              "timestamp": "2024-06-01T10:00:00Z"},
             {"role": "assistant", "content": "Have a great trip!",
              "timestamp": "2024-06-01T09:00:00Z"}],
            np.array([{"role": "user", "content": "I am vegan."}], dtype=object),
            (Message(role="user", content="I read sci-fi."),),
        ],
    })
    seeds = from_dataframe(df)
    assert [s.entity_id for s in seeds] == ["ana", "bo"]
    trip, books = seeds[0].conversations
    assert (trip.id, trip.title, books.id, books.title) == ("c1", "Trip", "3", "Books")
    # A nested list keeps its order, whatever the timestamps say.
    assert contents(trip) == ["I fly to Tokyo on Friday.", "Have a great trip!"]
    assert trip.messages[0].timestamp == datetime(2024, 6, 1, 10, tzinfo=UTC)
    assert contents(seeds[1].conversations[0]) == ["I am vegan."]


def test_nested_frame_conversation_col_and_entity_keyword():
    df = pd.DataFrame({"conv": ["a", "b"],
                       "turns": [[{"role": "user", "content": "x"}],
                                 [{"role": "system", "content": "y"}]]})
    [seed] = from_dataframe(df, entity_id="u1", conversation_col="conv", messages_col="turns")
    assert [c.id for c in seed.conversations] == ["a", "b"]


def test_messages_col_none_reads_a_long_frame_with_a_messages_column():
    df = pd.DataFrame({"conversation_id": ["c1"], "role": ["user"], "content": ["hi"],
                       "messages": ["a column that means something else"]})
    [seed] = from_dataframe(df, entity_id="u1", messages_col=None)
    assert contents(seed.conversations[0]) == ["hi"]


def test_nested_frame_problems_name_the_row_and_the_message():
    df = pd.DataFrame({
        "id": ["ok", "empty", None, "text", "bad"],
        "messages": [[{"role": "user", "content": "fine"}], [], [{"role": "user",
                                                                  "content": "x"}],
                     "not a list", [{"role": "bot", "content": ""}, 3,
                                    {"role": "user", "content": "y", "timestamp": "soon"}]],
    }, index=[10, 11, 12, 13, 14])
    [seed] = from_dataframe(df, entity_id="u1")
    ok, empty, missing, text, bad = seed.conversations
    assert isinstance(ok, Conversation)
    assert empty.reason == "conversation 'empty': row 11: messages is empty"
    assert (missing.conversation_id, missing.index) == ("#2", 2)
    assert missing.reason == "conversation '#2': row 12: missing 'id'"
    assert text.reason == "conversation 'text': row 13: 'messages' must be a list, got str"
    assert bad.reason == ("conversation 'bad': row 14: messages[1] must be an object with "
                          "'role' and 'content', got int")


def test_nested_duplicate_ids_fail_in_validation():
    df = pd.DataFrame({"id": ["c1", "c1"], "messages": [[{"role": "user", "content": "a"}],
                                                        [{"role": "user", "content": "b"}]]})
    [seed] = from_dataframe(df, entity_id="u1")
    stats = chunking_stats(seed)
    assert stats["error"].str.contains("duplicate id").all()


# --- whole-frame errors --------------------------------------------------------------------


def test_missing_columns_are_named_with_the_columns_and_the_keyword():
    df = pd.DataFrame({"conv": ["c1"], "speaker": ["user"], "text": ["hi"]})
    with pytest.raises(InvalidInputError) as info:
        from_dataframe(df, entity_id="u1", role_col="speaker", content_col="text")
    message = str(info.value)
    assert "column 'conversation_id' not found" in message
    assert "(columns: conv, speaker, text)" in message
    assert "pass conversation_col='conv'" in message

    with pytest.raises(InvalidInputError) as info:
        from_dataframe(df)
    message = str(info.value)
    assert "columns 'entity_id', 'conversation_id', 'role' and 'content' not found" in message
    assert "entity_id='...'" in message
    assert "role_col='speaker'" in message and "content_col='text'" in message


def test_a_named_optional_column_must_exist():
    df = pd.DataFrame({"conversation_id": ["c1"], "role": ["user"], "content": ["hi"]})
    with pytest.raises(InvalidInputError, match="column 'sent_at' not found.*timestamp_col="):
        from_dataframe(df, entity_id="u1", timestamp_col="sent_at")
    with pytest.raises(InvalidInputError, match="column 'turns' not found"):
        from_dataframe(df, entity_id="u1", messages_col="turns")


@pytest.mark.parametrize("data", [pd.DataFrame(),
                                  pd.DataFrame(columns=["conversation_id", "role", "content"])])
def test_an_empty_frame_is_refused(data):
    with pytest.raises(InvalidInputError, match="no rows"):
        from_dataframe(data, entity_id="u1")


@pytest.mark.parametrize("data", [None, [{"role": "user"}], {"content": ["x"]},
                                  pd.Series(["x"])])
def test_not_a_dataframe_is_refused(data):
    with pytest.raises(InvalidInputError, match="expected a pandas DataFrame"):
        from_dataframe(data, entity_id="u1")


def test_missing_entity_ids_are_refused_naming_the_rows():
    df = long_frame([("u1", "c1", "user", "a"), (None, "c2", "user", "b")])
    with pytest.raises(InvalidInputError, match=r"no entity id .* in 1 row \(row 1\)"):
        from_dataframe(df)
    df = long_frame([(" ", "c1", "user", "a"), ("u1", "c2", "user", "b"),
                     (np.nan, "c3", "user", "c")])
    with pytest.raises(InvalidInputError, match=r"in 2 rows \(rows 0, 2\).*dropna"):
        from_dataframe(df)


def test_bad_keywords_are_refused():
    df = long_frame([("u1", "c1", "user", "a")])
    with pytest.raises(InvalidInputError, match="process_id"):
        from_dataframe(df, process_id="")
    with pytest.raises(InvalidInputError, match="entity_id must be a non-empty string"):
        from_dataframe(df.drop(columns="entity_id"), entity_id=" ")


# --- per-row problems ----------------------------------------------------------------------


def test_bad_rows_fail_their_own_conversation_naming_the_row():
    df = pd.DataFrame({
        "conversation_id": ["ok1", "c7", "c7", "c8", "c9", "c10", "ok2", "c7", None, "c11"],
        "role": ["user", "user", "assistant", None, "bot", "user", "user", "user", "user",
                 "user"],
        "content": ["fine", "hello", np.nan, "x", "y", "z", "also fine", "   ", "w", "v"],
        "timestamp": ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-01", "2024-01-01",
                      "next tuesday-ish", "2024-01-01", "2024-01-03", "2024-01-01", ""],
    }, index=range(1525, 1535))
    [seed] = from_dataframe(df, entity_id="u1")
    got = by_id(seed)
    assert list(got) == ["ok1", "c7", "c8", "c9", "c10", "ok2", "#6", "c11"]
    assert isinstance(got["ok1"], Conversation) and isinstance(got["ok2"], Conversation)
    assert contents(got["ok2"]) == ["also fine"]
    # Empty messages are left out with a warning naming their rows; the rest goes on.
    assert contents(got["c7"]) == ["hello"]
    assert got["c7"].warnings == ("empty message left out (2: row 1527, row 1532)",)
    assert got["c8"].reason == "conversation 'c8': row 1528: role is missing"
    assert got["c8"].index == 2
    # "bot" is a common name for the assistant.
    assert [m.role for m in got["c9"].messages] == ["assistant"]
    # A time that cannot be read is left empty, with a warning: not a failure.
    assert got["c10"].messages[0].timestamp is None
    assert got["c10"].warnings == (
        "unreadable timestamp left empty (row 1530: 'next tuesday-ish')",)
    assert got["#6"].reason == "conversation '#6': row 1533: missing 'id'"
    # A blank timestamp is a missing one, not a bad one.
    assert isinstance(got["c11"], Conversation)
    assert got["c11"].messages[0].timestamp is None


def test_non_string_values_are_named_with_their_type():
    df = pd.DataFrame({"conversation_id": ["c1", "c2", "c3"],
                       "role": pd.Series(["user", 5, "user"], dtype=object),
                       "content": pd.Series(["ok", "fine", 42], dtype=object)})
    [seed] = from_dataframe(df, entity_id="u1")
    c1, c2, c3 = seed.conversations
    assert isinstance(c1, Conversation)
    assert c2.reason == "conversation 'c2': row 1: role must be a string, got int 5"
    assert c3.reason == "conversation 'c3': row 2: content must be text, got int 42"


def test_rows_are_named_by_their_index_labels():
    df = pd.DataFrame({"conversation_id": ["c1", "c2"], "role": ["user", "user"],
                       "content": ["fine", None],
                       "timestamp": np.array([1.7e9, 1e20])},
                      index=pd.MultiIndex.from_tuples([(np.int64(1), "a"), (2, "b")]))
    [seed] = from_dataframe(df, entity_id="u1")
    assert seed.conversations[1].reason == (
        "conversation 'c2': nothing left to send (empty message left out: 1)")
    df["content"] = ["fine", "also fine"]
    [seed] = from_dataframe(df, entity_id="u1")
    assert seed.conversations[1].warnings == (
        "unreadable timestamp left empty (row (2, 'b'): 1e+20)",)


def test_many_bad_rows_are_summarised():
    df = pd.DataFrame({"conversation_id": ["c1"] * 6, "role": ["robot"] * 6,
                       "content": ["x"] * 6})
    [seed] = from_dataframe(df, entity_id="u1")
    reason = seed.conversations[0].reason
    assert reason.startswith("conversation 'c1': row 0: role 'robot' is not one of user, "
                             "assistant, system")
    assert reason.count("row ") == 3 and reason.endswith("; and 3 more")


def test_validation_passes_the_failures_through_unchanged():
    df = pd.DataFrame({"conversation_id": ["c1", "c2"], "role": ["user", "user"],
                       "content": ["hello", None]})
    [seed] = from_dataframe(df, entity_id="u1")
    results = [parsed for _, parsed in check_conversations(seed)]
    assert results[0] == seed.conversations[0]
    assert results[1] is seed.conversations[1]


# --- chunking statistics -------------------------------------------------------------------


def stats_frame():
    return pd.DataFrame({
        "entity_id": ["ana"] * 4 + ["bo"] * 3 + ["ana"],
        "conversation_id": ["c1", "c1", "c1", "c2", "c1", "c1", "c2", "c3"],
        "role": ["user", "assistant", "user", "user", "user", "assistant", "user", "user"],
        "content": ["a" * 10, "b" * 25, "c" * 3, "d" * 7, "e" * 40, "f" * 2, "g", None],
    })


def test_chunking_stats_counts_by_hand():
    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=30)
    stats = chunking_stats(stats_frame(), config)
    assert list(stats.columns) == list(STATS_COLUMNS)
    assert stats[["entity_id", "conversation_id"]].values.tolist() == [
        ["ana", "c1"], ["ana", "c2"], ["ana", "c3"], ["bo", "c1"], ["bo", "c2"]]
    rows = stats.set_index(["entity_id", "conversation_id"])
    # ana/c1: 10 + 25 + 3 = 38 characters; packed [10], [25, 3] (10 + 25 > 30): 2 requests.
    assert rows.loc[("ana", "c1")].to_dict() == {
        "messages": 3, "characters": 38, "estimated_tokens": math.ceil(38 / 4), "requests": 2,
        "largest_message": 25, "over_limit": True, "error": None}
    assert rows.loc[("ana", "c2")].to_dict() == {
        "messages": 1, "characters": 7, "estimated_tokens": 2, "requests": 1,
        "largest_message": 7, "over_limit": False, "error": None}
    # bo/c1: the 40-character message is itself split at 30: [30], [10, 2].
    assert rows.loc[("bo", "c1"), ["characters", "estimated_tokens", "requests"]].tolist() == [
        42, 11, 2]
    failed = rows.loc[("ana", "c3")]
    assert failed["error"] == ("conversation 'c3': nothing left to send (empty message left "
                               "out: 1)")
    assert (failed["messages"], failed["requests"], failed["over_limit"]) == (0, 0, False)
    assert stats["error"].isna().tolist() == [True, True, False, True, True]
    assert stats["requests"].dtype == np.int64 and stats["over_limit"].dtype == bool


def test_chunking_stats_takes_seed_data_and_lists_of_them():
    seeds = from_dataframe(stats_frame())
    by_frame = chunking_stats(stats_frame())
    pd.testing.assert_frame_equal(chunking_stats(seeds), by_frame)
    assert chunking_stats(seeds[1])["entity_id"].tolist() == ["bo", "bo"]
    raw = SeedData.for_conversations(entity_id="u1", conversations=[
        {"id": "x", "messages": [{"role": "user", "content": "hello"}]}])
    assert chunking_stats(raw)[["conversation_id", "characters"]].values.tolist() == [["x", 5]]
    assert len(chunking_stats([])) == 0
    assert list(chunking_stats([]).columns) == list(STATS_COLUMNS)


def test_chunking_stats_passes_keywords_to_from_dataframe():
    df = pd.DataFrame({"thread": ["t1"], "role": ["user"], "content": ["hello"]})
    stats = chunking_stats(df, entity_id="u1", conversation_col="thread")
    assert stats[["entity_id", "conversation_id", "characters"]].values.tolist() == [
        ["u1", "t1", 5]]


def test_chunking_stats_refuses_other_input():
    with pytest.raises(InvalidInputError, match="a DataFrame, a SeedData or a list"):
        chunking_stats("conversations.json")
    with pytest.raises(InvalidInputError, match="entity_id: these keywords are for a DataFrame"):
        chunking_stats(from_dataframe(stats_frame()), entity_id="u1")


def test_oversized_conversation_without_chunking_is_an_error_row():
    config = SeedConfig(max_chars_per_request=30, chunk_large_conversations=False)
    stats = chunking_stats(stats_frame(), config).set_index("conversation_id")
    assert "too large for one request" in stats.loc["c1", "error"].iloc[0]


def test_stats_totals_per_entity_and_overall_match_total_plan():
    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=30)
    stats = chunking_stats(stats_frame(), config)
    per_entity = stats_totals(stats)
    assert list(per_entity.columns) == ["entity_id", *TOTALS_COLUMNS]
    assert per_entity.values.tolist() == [
        # ana: c1 (38 chars, 10 tokens, 2 requests) + c2 (7, 2, 1); c3 invalid.
        ["ana", 3, 2, 1, 4, 45, 12, 3, 1],
        # bo: c1 (42 chars, 11 tokens, 2 requests) + c2 (1, 1, 1).
        ["bo", 2, 2, 0, 3, 43, 12, 3, 1]]
    overall = stats_totals(stats, by=None)
    assert list(overall.columns) == ["entities", *TOTALS_COLUMNS]
    expected = total_plan(plan_seeds(from_dataframe(stats_frame()), config))
    assert overall.iloc[0].to_dict() == {
        "entities": expected.entities, "conversations": expected.conversations,
        "valid": expected.valid, "invalid": expected.invalid, "messages": expected.messages,
        "characters": expected.characters, "estimated_tokens": expected.estimated_tokens,
        "requests": expected.requests, "over_limit": expected.over_limit}
    teams = stats.assign(team=["red", "blue", "red", "red", "blue"])
    by_team = stats_totals(teams, by=["team"]).set_index("team")
    assert by_team[["conversations", "invalid", "requests"]].to_dict("index") == {
        "red": {"conversations": 3, "invalid": 1, "requests": 4},
        "blue": {"conversations": 2, "invalid": 0, "requests": 2}}


def test_stats_totals_refuses_a_frame_that_is_not_stats():
    with pytest.raises(InvalidInputError, match="not a frame from chunking_stats"):
        stats_totals(pd.DataFrame({"entity_id": ["a"]}))
    stats = chunking_stats(stats_frame())
    with pytest.raises(InvalidInputError, match="no column 'team'"):
        stats_totals(stats, by="team")
    with pytest.raises(InvalidInputError, match="cannot group by 'over_limit'"):
        stats_totals(stats, by="over_limit")


# --- plotting ------------------------------------------------------------------------------


def legend_of(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


def bar_heights(ax):
    """{bar centre: height} of an Axes' non-empty histogram bars."""
    return {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches
            if p.get_height() > 0}


def test_plot_draws_three_panels_with_both_limits():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=30)
    stats = chunking_stats(stats_frame(), config)
    figure = plot_chunking_stats(stats, config=config)
    assert isinstance(figure, Figure)
    characters_ax, messages_ax, requests_ax = figure.axes
    assert [ax.get_xlabel() for ax in figure.axes] == ["characters", "messages", "requests"]
    assert figure._suptitle.get_text() == "4 conversations to send (1 invalid, not shown)"
    # ana/c1 (38 characters, 3 messages) and bo/c1 (42 characters) are over a limit
    assert legend_of(characters_ax) == [
        "limit: 30 characters per request\n2 conversations over it are split"]
    assert legend_of(messages_ax) == [
        "limit: 2 messages per request\n1 conversation over it is split"]
    assert bar_heights(messages_ax) == {1: 2, 2: 1, 3: 1}
    assert bar_heights(requests_ax) == {1: 2, 2: 2}  # two conversations need 1 request, two 2
    assert all(ax.get_yscale() == "linear" for ax in figure.axes)


def test_plot_uses_log_scales_where_sizes_and_counts_span_orders_of_magnitude():
    pytest.importorskip("matplotlib")
    # 300 one-line chats and one marathon of 3,000 messages: on linear axes its bars vanish.
    rows = [(f"c{i}", "user", "hi there") for i in range(300)]
    rows += [("marathon", "user" if i % 2 == 0 else "assistant", "x" * 200)
             for i in range(3_000)]
    df = pd.DataFrame(rows, columns=["conversation_id", "role", "content"])
    config = SeedConfig(max_messages_per_request=1_000)
    figure = plot_chunking_stats(chunking_stats(df, config, entity_id="u1"), config=config)
    characters_ax, messages_ax, requests_ax = figure.axes
    assert characters_ax.get_xscale() == messages_ax.get_xscale() == "log"
    assert all(ax.get_yscale() == "log" for ax in figure.axes)
    assert bar_heights(requests_ax) == {1: 300, 3: 1}  # the marathon's bar is there
    assert requests_ax.get_ylim()[0] < 1  # ... and has a height on the log axis
    assert legend_of(messages_ax) == [
        "limit: 1,000 messages per request\n1 conversation over it is split"]
    assert legend_of(characters_ax) == [
        "limit: 800,000 characters per request\nevery conversation fits"]
    # the limit is on the axis, though far beyond every conversation's characters
    assert characters_ax.get_xlim()[1] > 800_000


def test_plot_draws_into_given_axes_two_or_three():
    plt = pytest.importorskip("matplotlib.pyplot")
    df = pd.DataFrame({"conversation_id": ["small", "big"], "role": ["user", "user"],
                       "content": ["a" * 5, "b" * 50_000]})
    stats = chunking_stats(df, entity_id="u1")
    for panels in (3, 2):  # two: characters and requests, as before the messages panel
        figure, axes = plt.subplots(1, panels)
        try:
            returned = plot_chunking_stats(stats, ax=axes)
            assert returned is figure
            assert axes[0].get_xscale() == "log"
            assert axes[-1].get_xlabel() == "requests"
        finally:
            plt.close(figure)
    figure, axes = plt.subplots(1, 4)
    try:
        with pytest.raises(ConfigurationError, match="ax must be three matplotlib Axes"):
            plot_chunking_stats(stats, ax=axes)
    finally:
        plt.close(figure)


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'memori_nb\[plot\]'"):
        plot_chunking_stats(chunking_stats(stats_frame()))


# --- the module itself ---------------------------------------------------------------------


def test_docstring_examples_run():
    # memori_nb.plan is the function; its module is in sys.modules.
    for module in (memori_nb.sources.dataframe, memori_nb.stats, memori_nb.plots,
                   sys.modules["memori_nb.plan"]):
        failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failures == 0, module


def test_frames_imports_no_network_or_widget_library():
    # Import lines are read with regular expressions, not ast.parse: on Python 3.11.7,
    # ast.parse fails now and then ("AST constructor recursion depth mismatch") while
    # another thread of the test process formats a traceback.
    imported = set()
    for module in (memori_nb.sources.dataframe, memori_nb.stats):
        for line in Path(module.__file__).read_text().splitlines():
            if found := re.match(r"\s*import\s+([\w., ]+)", line):
                imported.update(name.split()[0].split(".")[0]
                                for name in found.group(1).split(","))
            elif found := re.match(r"\s*from\s+(\w+)", line):  # (relative ones start with .)
                imported.add(found.group(1))
    assert "pandas" in imported and "numpy" in imported  # the reading works
    assert not imported & {"ipywidgets", "tqdm", "httpx", "duckdb"}


def test_a_larger_frame_round_trips():
    rng = np.random.default_rng(3)
    n_conversations, per = 2_000, 5
    conv = np.repeat(np.arange(n_conversations), per)
    turn = np.tile(np.arange(per), n_conversations)
    df = pd.DataFrame({"entity_id": conv % 17, "conversation_id": conv,
                       "role": np.where(turn % 2 == 0, "user", "assistant"),
                       "content": [f"message {t} of {c}" for c, t in zip(conv, turn)],
                       "timestamp": pd.Timestamp("2024-01-01", tz="UTC")
                       + pd.to_timedelta(turn, unit="s")})
    shuffled = df.iloc[rng.permutation(len(df))]
    seeds = from_dataframe(shuffled)
    assert sorted(s.entity_id for s in seeds) == sorted(str(e) for e in range(17))
    assert sum(s.size for s in seeds) == n_conversations
    for seed in seeds:
        for conversation in seed.conversations:
            c = int(conversation.id)
            assert str(c % 17) == seed.entity_id
            assert contents(conversation) == [f"message {t} of {c}" for t in range(per)]
