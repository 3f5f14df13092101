"""How fast facts are embedded (all-MiniLM-L6-v2, int8 ONNX) on this machine.

Embeds N generated facts of 3-15 words (a third of them word-for-word repeats, as facts recur
across conversations) with a fresh Embedder, and prints facts per second next to references measured
in the same run: tokenization alone (the floor), one fact per model run, and the cached pass.

Last, what a network run needs: at the concurrency bound of batch 50 (50 / the mean latency,
about 140 conversations/s against the loopback server's median 300 ms, sigma 0.6) with the
facts of realistic conversations (``sql_store.py --network`` measures 1,358 new facts per 1,000
of them), the facts/s the store must embed, and the share of one core that takes at the
batched rate above.

    python benchmarks/embedding_rate.py [--facts 2000] [--threads 2] [--batch-size 64]
                                        [--bound 140] [--facts-per-conversation 1.36]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from memori_nb.embeddings import Embedder

SUBJECTS = ["user", "the user", "user's sister", "user's manager", "user's partner", "user's son"]
PREDICATES = ["likes {food}", "lives in {place}", "has_dog {name}", "likes hiking in {place}",
              "works as a {job} at {company}", "prefers {food} over {food2} for dinner",
              "is learning {skill} on {day} evenings with a tutor",
              "is allergic to {food} and avoids it at restaurants",
              "plans to visit {place} next {season} with {name}", "drives a {color} car",
              "reads about {skill} before going to bed", "was born in {year}",
              "moved to {place} in {year} for a job at {company}", "owns {n} {pet}s"]
TAILS = ["", "", "", " since {year}", " on weekends", " according to {name}",
         " but wants to change that soon"]
FILL = {"place": ["Lisbon", "the Alps", "Oslo", "Kyoto", "Austin", "Porto", "Lima", "Nairobi",
                  "Montreal", "Hanoi", "Berlin", "Cape Town"],
        "name": ["Rex", "Maya", "Ola", "Bartholomew", "Jun", "Priya", "Tomás", "Aiko"],
        "job": ["data engineer", "nurse", "teacher", "pilot", "chef", "lawyer", "barista"],
        "company": ["Acme", "Globex", "Initech", "a logistics start-up", "the city hospital"],
        "food": ["ramen", "tacos", "dal", "peanuts", "sushi", "tea", "oat milk", "cilantro"],
        "food2": ["pizza", "salad", "curry", "burgers"],
        "skill": ["Japanese", "Rust", "pottery", "chess", "the piano", "sailing"],
        "day": ["Tuesday", "Friday", "Sunday"], "season": ["spring", "autumn", "summer"],
        "color": ["red", "green", "silver", "black"], "year": [str(y) for y in range(1960, 2025)],
        "n": ["two", "three", "four"], "pet": ["cat", "parrot", "rabbit"]}


def make_facts(n: int, seed: int = 7, repeat: float = 0.25) -> list[str]:
    """n facts of 3-15 words; about ``repeat`` of them restate an earlier fact word for word."""
    rng = random.Random(seed)
    facts: list[str] = []
    while len(facts) < n:
        if facts and rng.random() < repeat:
            facts.append(rng.choice(facts))
            continue
        template = rng.choice(SUBJECTS) + " " + rng.choice(PREDICATES) + rng.choice(TAILS)
        text = template.format(**{k: rng.choice(v) for k, v in FILL.items()})
        facts.append(" ".join(text.split()[:15]))
    return facts


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="cold runs (fresh cache) to time")
    parser.add_argument("--bound", type=float, default=140.0,
                        help="conversations/s of the network run to compare with")
    parser.add_argument("--facts-per-conversation", type=float, default=1.36,
                        help="new facts the store embeds per conversation")
    args = parser.parse_args()

    facts = make_facts(args.facts)
    distinct = len(set(facts))
    words = [len(f.split()) for f in facts]

    embedder = Embedder(threads=args.threads, batch_size=args.batch_size)
    load_s, _ = timed(embedder.load)
    tokens = [len(embedder._tokenizer.encode(f).ids) for f in facts]
    print(f"{len(facts)} facts, {distinct} distinct, {min(words)}-{max(words)} words, "
          f"{statistics.mean(tokens):.1f} tokens on average; threads={embedder.threads}, "
          f"batch_size={embedder.batch_size}, cpus={os.cpu_count()}; model load {load_s:.2f} s")

    tok_s, _ = timed(lambda: [embedder._tokenizer.encode(f) for f in facts])
    print(f"  tokenization alone (floor)    {len(facts) / tok_s:>10,.0f} facts/s")

    single = list(dict.fromkeys(facts))[:200]
    one = Embedder(threads=args.threads, batch_size=1).load()
    one_s, one_cpu = timed(lambda: one.embed(single))
    print(f"  one fact per model run        {len(single) / one_s:>10,.0f} facts/s   "
          f"({one_s / len(single) * 1000:.2f} ms wall, {one_cpu / len(single) * 1000:.2f} ms CPU "
          f"per fact)")

    walls, cpus = [], []
    for _ in range(args.repeat):
        embedder.clear_cache()
        wall, cpu = timed(lambda: embedder.embed(facts))
        walls.append(wall)
        cpus.append(cpu)
    best, median = min(walls), statistics.median(walls)
    print(f"  batched, cold cache           {distinct / best:>10,.0f} facts/s   "
          f"(distinct facts computed; best of {args.repeat}, median {distinct / median:,.0f}; "
          f"{min(cpus) / distinct * 1000:.2f} ms CPU per fact; "
          f"{len(facts) / best:,.0f} input facts/s counting repeats)")

    needed = args.bound * args.facts_per_conversation
    print(f"  a network run at {args.bound:,.0f} conv/s   {needed:>10,.0f} facts/s needed: "
          f"{needed * min(cpus) / distinct:.0%} of one core's CPU, "
          f"{needed * best / distinct:.0%} of the embedder's wall time at the batched rate")

    cached_s, _ = timed(lambda: embedder.embed_bytes(facts))
    print(f"  all cached (embed_bytes)      {len(facts) / cached_s:>10,.0f} facts/s")

    eleven = make_facts(11, seed=99)
    small = Embedder(threads=args.threads, batch_size=args.batch_size).load()
    small.embed(["warm-up"])
    wall, cpu = timed(lambda: small.embed(eleven))
    print(f"  a conversation's 11 new facts {wall * 1000:>10.1f} ms wall, {cpu * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()
