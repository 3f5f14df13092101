"""Load a long-format DataFrame of a million messages, then plan it.

Builds 100,000 conversations x 10 messages for 1,000 entities, with timestamps, shuffled so
rows of a conversation are neither adjacent nor in time order; times ``from_dataframe`` and
``chunking_stats`` separately and prints seconds and messages per second.

    python benchmarks/load_and_plan.py [--conversations 100000] [--messages 10] [--entities 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from memori_nb import chunking_stats, from_dataframe, stats_totals

SENTENCES = ("I just moved to Lisbon and I am looking for a climbing gym.",
             "My daughter Ana starts school in September.",
             "That sounds exciting! What would you like to know?",
             "I prefer vegetarian recipes, nothing too spicy.",
             "Sure, here are three ideas for dinner this week.")


def build_frame(conversations: int, messages: int, entities: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = conversations * messages
    conv = np.repeat(np.arange(conversations), messages)
    turn = np.tile(np.arange(messages), conversations)
    start = np.datetime64("2024-01-01T00:00:00", "s") + rng.integers(
        0, 365 * 86400, conversations).astype("timedelta64[s]")
    frame = pd.DataFrame({
        "entity_id": (conv % entities).astype(str),
        "conversation_id": np.char.add("conv-", conv.astype(str)),
        "role": np.where(turn % 2 == 0, "user", "assistant"),
        "content": np.array(SENTENCES, dtype=object)[rng.integers(0, len(SENTENCES), n)],
        "timestamp": pd.to_datetime(start[conv] + (turn * 30).astype("timedelta64[s]"),
                                    utc=True),
    })
    return frame.iloc[rng.permutation(n)].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--entities", type=int, default=1_000)
    args = parser.parse_args()
    n = args.conversations * args.messages

    started = time.perf_counter()
    frame = build_frame(args.conversations, args.messages, args.entities)
    print(f"built frame: {n:,} rows in {time.perf_counter() - started:.2f} s")

    started, cpu = time.perf_counter(), time.process_time()
    seeds = from_dataframe(frame)
    load, load_cpu = time.perf_counter() - started, time.process_time() - cpu
    loaded = sum(len(c["messages"]) for seed in seeds for c in seed.conversations)
    assert loaded == n, (loaded, n)
    print(f"from_dataframe: {load:.2f} s ({load_cpu:.2f} s CPU), {n / load:,.0f} messages/s "
          f"({len(seeds):,} entities, {sum(s.size for s in seeds):,} conversations)")

    started, cpu = time.perf_counter(), time.process_time()
    stats = chunking_stats(seeds)
    plan, plan_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"chunking_stats: {plan:.2f} s ({plan_cpu:.2f} s CPU), {n / plan:,.0f} messages/s "
          f"({len(stats):,} rows)")
    totals = stats_totals(stats, by=None).iloc[0]
    print(f"totals: {totals['valid']:,} valid, {totals['messages']:,} messages, "
          f"{totals['characters']:,} characters, {totals['requests']:,} requests")


if __name__ == "__main__":
    main()
