"""Overhead of the whole pipeline with the offline backend: seed JSON file -> DuckDB file.

Writes a seed file of N conversations of about 10 messages, then times loading, validating,
chunking, extracting and storing them (the same path as `python -m memori_nb seed`).

    python benchmarks/local_overhead.py [--conversations 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from memori_nb import Memori, SeedConfig, load_seed_file

USER_LINES = ["I live in {city} and I work at {company}.", "I love {food}, honestly.",
              "I just bought a {thing}!", "Can you help me plan a trip?",
              "My sister's name is {name}.", "I'm planning to learn {skill} this year.",
              "What's the weather like tomorrow?", "I have a dog named {name}."]
WORDS = {"city": ["Porto", "Oslo", "Lima", "Austin"], "company": ["Acme", "Globex", "Initech"],
         "food": ["ramen", "tacos", "dal"], "thing": ["bike", "Kindle", "espresso machine"],
         "name": ["Maya", "Rex", "Ola"], "skill": ["Rust", "pottery", "Spanish"]}


def write_seed_file(path: Path, n: int, entities: int = 100) -> None:
    rng = random.Random(7)
    fill = {k: None for k in WORDS}
    documents = []
    for e in range(entities):
        convs = []
        for c in range(n // entities):
            messages = []
            for turn in range(5):
                fill = {k: rng.choice(v) for k, v in WORDS.items()}
                messages.append({"role": "user",
                                 "content": rng.choice(USER_LINES).format(**fill)})
                messages.append({"role": "assistant",
                                 "content": "Got it, thanks for telling me. " * 2})
            convs.append({"id": f"e{e}-c{c}", "messages": messages})
        documents.append({"entity_id": f"user-{e}", "conversations": convs})
    path.write_text(json.dumps(documents))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "seed.json"
        write_seed_file(source, args.conversations)
        size_mb = source.stat().st_size / 1e6
        started = time.perf_counter()
        seeds = load_seed_file(source)
        loaded = time.perf_counter()
        m = Memori(conn=str(Path(folder) / "bench.duckdb"), backend="local")
        result = asyncio.run(m.seed(seeds, seed_config=SeedConfig(batch_size=10)))
        finished = time.perf_counter()
        facts = m.sql("select count(*) n, sum(mention_count) s from facts")
        m.close()
    total = finished - started
    print(f"{result.total:,} conversations ({size_mb:.0f} MB JSON) -> DuckDB: "
          f"{total:.1f} s = {result.total / total:,.0f} conv/s "
          f"(load {loaded - started:.1f} s, seed {finished - loaded:.1f} s); "
          f"{result.successful:,} succeeded, {result.total_triples:,} triples, "
          f"{int(facts.n[0]):,} distinct facts")


if __name__ == "__main__":
    main()
