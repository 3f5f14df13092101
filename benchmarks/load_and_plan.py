"""Load a shuffled long-format DataFrame of about a million realistic messages, then plan it.

The frame holds conversations from :mod:`realistic` (heavy-tailed sizes: median 18 messages
and 6.8k characters, a tail of long chats and pasted documents), one row per message with a
UTC timestamp, spread over 2,000 entities, its rows shuffled so a conversation's rows are
neither adjacent nor in time order. Times ``from_dataframe`` and ``chunking_stats`` (on the
loaded seeds, as a notebook does) and prints each beside the floor measured in the same run:
sorting the frame by time, plus one pandas group-by for messages and characters per
conversation. Each measurement is repeated (``--repeats``), since this machine's
speed varies from minute to minute.

``--short`` builds instead the earlier frame of 100,000 conversations of ten one-line
messages: many small conversations, a lower bound rather than a realistic load.

    python benchmarks/load_and_plan.py [--messages 1000000] [--entities 2000] [--repeats 3]
                                       [--short]
"""

from __future__ import annotations

import argparse
import gc
import pickle
import time

import numpy as np
import pandas as pd

from memori_nb import chunking_stats, from_dataframe, stats_totals
from realistic import generate_conversations

MEAN_MESSAGES_PER_CONVERSATION = 56  # of realistic.py's log-normal at scale 1


def build_frame(messages: int, entities: int, seed: int = 7) -> pd.DataFrame:
    """Realistic conversations flattened to one row per message (about ``messages`` rows),
    shuffled."""
    conversations = max(entities, round(messages / MEAN_MESSAGES_PER_CONVERSATION))
    seeds = generate_conversations(conversations, entities=entities, seed=seed)
    columns: dict[str, list] = {"entity_id": [], "conversation_id": [], "role": [],
                                "content": [], "timestamp": []}
    for seed_data in seeds:
        for conversation in seed_data["conversations"]:
            for message in conversation["messages"]:
                columns["entity_id"].append(seed_data["entity_id"])
                columns["conversation_id"].append(conversation["id"])
                columns["role"].append(message["role"])
                columns["content"].append(message["content"])
                columns["timestamp"].append(message["timestamp"])
    frame = pd.DataFrame(columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return shuffled(frame, seed)


SENTENCES = ("I just moved to Lisbon and I am looking for a climbing gym.",
             "My daughter Ana starts school in September.",
             "That sounds exciting! What would you like to know?",
             "I prefer vegetarian recipes, nothing too spicy.",
             "Sure, here are three ideas for dinner this week.")


def build_short_frame(messages: int, entities: int, seed: int = 7) -> pd.DataFrame:
    """Conversations of ten one-line messages (the lower bound), shuffled."""
    rng = np.random.default_rng(seed)
    conversations = messages // 10
    conv = np.repeat(np.arange(conversations), 10)
    turn = np.tile(np.arange(10), conversations)
    start = np.datetime64("2024-01-01T00:00:00", "s") + rng.integers(
        0, 365 * 86400, conversations).astype("timedelta64[s]")
    frame = pd.DataFrame({
        "entity_id": (conv % entities).astype(str),
        "conversation_id": np.char.add("conv-", conv.astype(str)),
        "role": np.where(turn % 2 == 0, "user", "assistant"),
        "content": np.array(SENTENCES, dtype=object)[rng.integers(0, len(SENTENCES), len(conv))],
        "timestamp": pd.to_datetime(start[conv] + (turn * 30).astype("timedelta64[s]"),
                                    utc=True),
    })
    return shuffled(frame, seed)


def shuffled(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows in random order, laid out as if read from a file: ``iloc`` alone would keep
    the texts in memory in their old order, which a real frame's reader never does."""
    order = np.random.default_rng(seed).permutation(len(frame))
    return pickle.loads(pickle.dumps(frame.iloc[order].reset_index(drop=True)))


def floor(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort the frame by time, then count messages and characters per conversation in one
    group-by (which keeps each group's rows in time order)."""
    ordered = frame.sort_values("timestamp", kind="stable")
    sizes = ordered.assign(characters=ordered["content"].str.len()).groupby(
        ["entity_id", "conversation_id"], sort=False)["characters"].agg(["size", "sum"])
    assert sizes["size"].sum() == len(frame)
    return sizes


def timed(step, *args):
    """The step's result, wall seconds and CPU seconds."""
    gc.collect()  # each repeat starts from the same heap, not the last one's garbage
    started, cpu = time.perf_counter(), time.process_time()
    result = step(*args)
    return result, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", action="store_true",
                        help="ten one-line messages per conversation: the lower bound")
    args = parser.parse_args()

    started = time.perf_counter()
    frame = (build_short_frame if args.short else build_frame)(args.messages, args.entities)
    lengths = frame["content"].str.len()
    n = len(frame)
    print(f"built frame: {n:,} rows, {frame['conversation_id'].nunique():,} conversations, "
          f"{frame['entity_id'].nunique():,} entities, {lengths.sum():,} characters "
          f"(message median {lengths.median():.0f}, p99 {lengths.quantile(0.99):,.0f}, "
          f"max {lengths.max():,}) in {time.perf_counter() - started:.1f} s")

    print("seconds wall (CPU); ratios to the floor of the same repeat, wall (CPU)")
    for repeat in range(1, args.repeats + 1):
        _, floor_s, floor_cpu = timed(floor, frame)
        seeds, load, load_cpu = timed(from_dataframe, frame)
        stats, plan, plan_cpu = timed(chunking_stats, seeds)
        assert stats_totals(stats, by=None)["messages"].iloc[0] == n
        del seeds
        total, total_cpu = load + plan, load_cpu + plan_cpu
        print(f"repeat {repeat}: floor {floor_s:.2f} ({floor_cpu:.2f}) | from_dataframe "
              f"{load:.2f} ({load_cpu:.2f}) | chunking_stats {plan:.2f} ({plan_cpu:.2f}) | "
              f"together {total:.2f} ({total_cpu:.2f}) = {total / floor_s:.1f}x "
              f"({total_cpu / floor_cpu:.1f}x) the floor")
    totals = stats_totals(stats, by=None).iloc[0]
    print(f"totals: {totals['valid']:,} valid of {totals['conversations']:,}, "
          f"{totals['messages']:,} messages, {totals['characters']:,} characters, "
          f"{totals['requests']:,} requests, {totals['over_limit']:,} over a limit")


if __name__ == "__main__":
    main()
