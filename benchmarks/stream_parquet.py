"""Seed a Parquet file of a million conversations as a stream, and check memory stays flat.

Writes N conversations (about 6 messages each, spread over 10,000 entities) to a Parquet file
with DuckDB SQL, then seeds it with the offline backend into a DuckDB file:

    await m.seed(read_source(path), keep_results=False)

Seeding runs in a fresh child process, so its peak RSS (VmHWM on Linux, else
``ru_maxrss``) measures the streaming path alone. Prints conversations per second and peak RSS in MB.

    python benchmarks/stream_parquet.py [--conversations 1000000] [--entities 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import duckdb

LINES = ["I live in Porto and I work at Acme.", "I love ramen, honestly.",
         "I just bought a bike!", "Can you help me plan a trip to Oslo?",
         "My sister's name is Maya.", "I'm planning to learn Rust this year.",
         "What's the weather like tomorrow?", "I have a dog named Rex."]
REPLIES = ["That sounds great!", "Sure, here is an idea.", "Congratulations!",
           "Tell me more about it."]


def write_parquet(path: Path, conversations: int, messages: int, entities: int) -> float:
    """Write the file with one SQL statement (no Python loop); returns seconds taken."""
    per_entity = max(1, conversations // entities)
    lines = "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in LINES) + "]"
    replies = "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in REPLIES) + "]"
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    con.execute(f"""
        COPY (
            SELECT 'user-' || lpad(CAST(c // {per_entity} AS VARCHAR), 6, '0') AS entity_id,
                   'conv-' || c AS conversation_id,
                   CASE WHEN t % 2 = 0 THEN 'user' ELSE 'assistant' END AS role,
                   CASE WHEN t % 2 = 0
                        THEN {lines}[1 + (c * 7 + t) % {len(LINES)}] || ' (' || c || ')'
                        ELSE {replies}[1 + (c + t) % {len(REPLIES)}] END AS content,
                   TIMESTAMP '2024-01-01' + to_seconds(c * 600 + t * 20) AS timestamp
            FROM range({conversations}) r(c), range({messages}) m(t)
            ORDER BY c, t
        ) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 100000)
    """)
    con.close()
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's VmHWM is the high-water mark of this process alone; ``ru_maxrss`` of a spawned
    child can carry over the parent's peak (it survives exec), so it is the fallback only.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_file(path: str, db: str, out: mp.Queue) -> None:
    """In the child: seed the file as a stream; report counts, seconds and peak RSS."""
    from memori_nb import Memori
    from memori_nb.sources import read_source

    async def run():
        m = Memori(conn=db, backend="local")
        m.config.storage.build()
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        result = await m.seed(read_source(path), keep_results=False)
        elapsed = time.perf_counter() - started
        m.close()
        return result, elapsed, rss_before

    result, elapsed, rss_before = asyncio.run(run())
    out.put({"total": result.total, "successful": result.successful, "failed": result.failed,
             "triples": result.total_triples, "seconds": elapsed, "rss_before_mb": rss_before,
             "peak_rss_mb": peak_rss_mb()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=6)
    parser.add_argument("--entities", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memori-bench-") as folder:
        path = Path(folder) / "messages.parquet"
        wrote = write_parquet(path, args.conversations, args.messages, args.entities)
        size_mb = path.stat().st_size / 2**20
        print(f"wrote {args.conversations:,} conversations x {args.messages} messages "
              f"({args.entities:,} entities) to Parquet: {size_mb:,.0f} MB in {wrote:.1f} s")
        context = mp.get_context("spawn")  # a fresh process: its peak RSS is the seeding's
        out = context.Queue()
        child = context.Process(target=seed_file,
                                args=(str(path), str(Path(folder) / "bench.duckdb"), out))
        child.start()
        stats = out.get()
        child.join()
        rate = stats["total"] / stats["seconds"]
        print(f"seeded {stats['total']:,} conversations ({stats['successful']:,} succeeded, "
              f"{stats['failed']:,} failed, {stats['triples']:,} triples) in "
              f"{stats['seconds']:.1f} s: {rate:,.0f} conversations/s")
        print(f"peak RSS of the seeding process: {stats['peak_rss_mb']:,.0f} MB "
              f"(after start-up: {stats['rss_before_mb']:,.0f} MB)")


if __name__ == "__main__":
    main()
