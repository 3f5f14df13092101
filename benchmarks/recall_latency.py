"""Recall latency for one entity with 1,000 facts: DuckDB cold (embedding them) and warm.

Seeds the entity's facts (generated, distinct, ten per conversation with source times) into
a DuckDB file, beside ``--others`` entities of 200 facts each, and times ``m.recall``:

- cold: the first recall, which embeds the entity's facts and keeps them in fact_embeddings;
  beside it the floor, the same texts embedded by a fresh Embedder and nothing else;
- warm: the median over ``--queries`` new questions (each embedded: a query is text the
  model has not seen); beside it the floor, embedding the question plus one numpy product
  over the 1,000 vectors held in memory; and the same recall on Memori's SQL tables (a
  SQLite file, where seeding embedded the facts).

The model's loading (about 0.3 s, once per process) is left out of every figure.

    python benchmarks/recall_latency.py [--facts 1000] [--others 0] [--queries 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from embedding_rate import make_facts

from memori_nb import Memori, SeedData
from memori_nb.embeddings import Embedder
from memori_nb.models import Extraction

QUESTIONS = ["where does the user live?", "what food is the user allergic to?",
             "which pets does the user have?", "what is the user learning?",
             "where does the user work?", "what car does the user drive?",
             "which trip is the user planning?", "what does the user do on weekends?",
             "who is the user's manager?", "when was the user born?"]


class StatedFacts:
    """The user's lines are the facts: seeding costs nothing beside the store's writes."""

    name = "stated"
    requires_network = False

    async def augment(self, request):
        return Extraction(facts=tuple(line for m in request.messages if m.role == "user"
                                      for line in m.content.splitlines() if line))

    async def aclose(self):
        pass


def seeds(entity: str, facts: list[str]) -> SeedData:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return SeedData.for_conversations(entity_id=entity, conversations=[
        {"id": f"{entity}-{i}", "messages": [
            {"role": "user", "content": "\n".join(facts[i:i + 10]),
             "timestamp": (start + timedelta(hours=i)).isoformat()},
            {"role": "assistant", "content": "Noted."}]} for i in range(0, len(facts), 10)])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=1000)
    parser.add_argument("--others", type=int, default=0, help="other entities, 200 facts each")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    facts = list(dict.fromkeys(make_facts(args.facts * 2, seed=11, repeat=0)))[:args.facts]
    data = [seeds("user", facts)] + [seeds(f"other-{e}", make_facts(200, seed=e, repeat=0))
                                     for e in range(args.others)]
    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} ({i})" for i in range(args.queries)]

    with tempfile.TemporaryDirectory() as folder:
        m = Memori(conn=str(Path(folder) / "m.duckdb"), backend=StatedFacts(),
                   embedder=Embedder().load())
        asyncio.run(m.seed(data))
        stored = m.sql("SELECT count(*) AS n FROM facts").n[0]
        began = time.perf_counter()
        m.recall("what does the user like?", entity_id="user")
        cold = time.perf_counter() - began
        warm = []
        for question in questions:
            began = time.perf_counter()
            m.recall(question, entity_id="user")
            warm.append(time.perf_counter() - began)
        m.close()

        floor_model = Embedder().load()
        began = time.perf_counter()
        vectors = floor_model.embed(facts)
        cold_floor = time.perf_counter() - began
        floor = []
        for question in questions:
            began = time.perf_counter()
            np.argsort(-(vectors @ floor_model.embed([question + " floor"])[0]))[:50]
            floor.append(time.perf_counter() - began)

        sql = Memori(conn=f"sqlite:///{Path(folder) / 'm.db'}", backend=StatedFacts(),
                     embedder=Embedder().load())
        asyncio.run(sql.seed(data[0]))
        on_sql = []
        for question in questions:
            began = time.perf_counter()
            sql.recall(question + " sql", entity_id="user")
            on_sql.append(time.perf_counter() - began)
        sql.close()

    print(f"entity of {len(facts):,} facts in a DuckDB store of {stored:,}")
    print(f"cold recall (embeds the facts): {ms(cold)}; floor, embedding them alone: "
          f"{ms(cold_floor)}")
    print(f"warm recall, median of {len(warm)}: {ms(statistics.median(warm))}; floor, query "
          f"embedding + numpy ranking: {ms(statistics.median(floor))}; Memori SQL store "
          f"(SQLite): {ms(statistics.median(on_sql))}")


if __name__ == "__main__":
    main()
