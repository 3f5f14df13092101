"""chunking_stats counts what from_dataframe measured, and agrees with validating every message."""

import numpy as np
import pandas as pd
import pytest

from memori_nb.models import SeedConfig, SeedData
from memori_nb.sources.dataframe import MEASURED, MeasuredSizes, from_dataframe
from memori_nb.stats import chunking_stats

CONFIGS = [SeedConfig(),
           SeedConfig(max_messages_per_request=3, max_chars_per_request=40),
           SeedConfig(max_chars_per_request=40, chunk_large_conversations=False),
           SeedConfig(max_messages_per_request=2, chunk_large_conversations=False)]


def unmeasured(seeds):
    """The same conversations without the loader's sizes: validated message by message."""
    return [SeedData.for_conversations(
        entity_id=seed.entity_id, options=seed.options,
        conversations=[{k: v for k, v in raw.items() if k != MEASURED}
                       for raw in seed.conversations]) for seed in seeds]


def messy_frame(rows=3_000, seed=5):
    """Long rows of many conversations with every kind of message validation treats apart."""
    rng = np.random.default_rng(seed)
    roles = np.array(["user", "assistant", "system", "Human", " AI ", "tool", "bot2", None,
                      "USER"], dtype=object)
    role_weights = np.array([40, 40, 2, 3, 3, 1, 0.3, 0.3, 1])
    words = "lorem ipsum dolor sit amet café 😀 東京".split()
    contents = []
    for _ in range(rows):
        kind = rng.random()
        if kind < 0.01:
            contents.append(rng.choice([None, np.nan, "", "   \n", 42]))
        elif kind < 0.02:
            contents.append(rng.choice(["nul\x00here", "lone \ud800 surrogate", "x" * 120]))
        else:
            contents.append(" ".join(rng.choice(words, rng.integers(1, 12))))
    stamps = pd.Series(pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC"),
                       dtype=object)
    stamps[rng.random(rows) < 0.01] = "not a time"
    stamps[rng.random(rows) < 0.02] = None
    conversation = rng.integers(0, rows // 12, rows).astype(object)
    conversation[rng.random(rows) < 0.003] = None
    frame = pd.DataFrame({
        "entity_id": rng.choice(["ana", "bo", " cy "], rows),
        "conversation_id": conversation,
        "role": rng.choice(roles, rows, p=role_weights / role_weights.sum()),
        "content": contents,
        "timestamp": stamps,
    })
    return frame.iloc[rng.permutation(rows)]


@pytest.mark.parametrize("config", CONFIGS)
def test_measured_stats_equal_stats_from_validating_every_message(config):
    seeds = from_dataframe(messy_frame())
    measured = [raw for seed in seeds for raw in seed.conversations if MEASURED in raw]
    # Both kinds are in the frame: conversations measured, and ones validation must judge.
    assert 0 < len(measured) < sum(seed.size for seed in seeds)
    stats = chunking_stats(seeds, config)
    pd.testing.assert_frame_equal(stats, chunking_stats(unmeasured(seeds), config))
    assert stats["error"].notna().any()  # unknown roles, nothing left, missing ids
    assert stats["over_limit"].any() == (config != SeedConfig())


def test_measured_sizes_count_what_validation_keeps():
    frame = pd.DataFrame({"conversation_id": ["c1"] * 3 + ["c2"] * 2 + ["c3"],
                          "role": ["user", " Human", "assistant", "user", "tool", "ai"],
                          "content": ["hi", "odd \ud800 text", "hello", "x", "{}", "   "]})
    [seed] = from_dataframe(frame, entity_id="u1")
    c1, c2, c3 = seed.conversations
    # c1 is kept whole (an alias, and an unstorable character replaced one for one);
    # c2 loses its tool message and c3 its blank one: validation must say how.
    assert c1[MEASURED] == MeasuredSizes("c1", c1["messages"], 3, 2 + 10 + 5, 10)
    assert MEASURED not in c2 and MEASURED not in c3
    stats = chunking_stats(seed).set_index("conversation_id")
    assert stats.loc["c1", ["messages", "characters", "largest_message"]].tolist() == [3, 17, 10]
    assert stats.loc["c2", ["messages", "characters"]].tolist() == [1, 1]
    assert stats.loc["c3", "error"] == ("conversation 'c3': nothing left to send "
                                        "(empty message left out: 1)")


def test_stats_follow_conversations_changed_after_loading():
    frame = pd.DataFrame({"conversation_id": ["c1", "c1", "c2", "c3"],
                          "role": ["user", "assistant", "user", "user"],
                          "content": ["hello", "hi there", "bye", "ok"]})
    [seed] = from_dataframe(frame, entity_id="u1")
    c1, c2, c3 = seed.conversations
    c1["messages"].append({"role": "user", "content": "one more"})
    c2["messages"] = [{"role": "user", "content": "   "}]
    c3["id"] = "c1"
    stats = chunking_stats(seed)
    assert stats["messages"].tolist() == [0, 0, 0]
    assert stats["error"].tolist() == [
        "conversation 'c1': duplicate id, used by 2 conversations (positions 0, 2); ids must "
        "be unique per entity",
        "conversation 'c2': nothing left to send (empty message left out: 1)",
        "conversation 'c1': duplicate id, used by 2 conversations (positions 0, 2); ids must "
        "be unique per entity"]
    del c3["id"]
    assert chunking_stats(seed)[["conversation_id", "messages", "characters"]].values.tolist() \
        == [["c1", 3, 21], ["c2", 0, 0], ["#2", 0, 0]]


def test_conversations_of_two_loads_in_one_seed_are_checked_for_duplicate_ids():
    frame = pd.DataFrame({"conversation_id": ["c1"], "role": ["user"], "content": ["hello"]})
    [first] = from_dataframe(frame, entity_id="u1")
    [second] = from_dataframe(frame, entity_id="u1")
    merged = SeedData.for_conversations(entity_id="u1", options=first.options,
                                        conversations=first.conversations
                                        + second.conversations)
    assert chunking_stats(merged)["error"].str.contains("duplicate id").tolist() == [True, True]


def test_a_role_column_of_lists_is_left_to_validation():
    frame = pd.DataFrame({"conversation_id": ["c1", "c1", "c2"], "content": ["a", "b", "c"],
                          "role": pd.Series([["user"], "user", "assistant"], dtype=object)})
    [seed] = from_dataframe(frame, entity_id="u1")
    stats = chunking_stats(seed)
    assert stats["error"].tolist() == [
        "conversation 'c1': row 0: role must be a string, got list ['user']", None]
    assert stats["characters"].tolist() == [0, 1]
