"""Seed a million conversations as a stream, from Parquet and from interleaved JSONL, and check
memory stays flat.

Two files of N conversations each, shaped like real chat history (``realistic.py``):

* **Parquet**, one row per message, each entity's conversations together;
* **JSONL**, one conversation per line in the order of their first message's time, whoever
  owns them (an export of a whole chat platform): consecutive lines rarely share an entity,
  so the reader makes one SeedData per line and the engine meets every entity again and again.

Generating a million realistic conversations in Python would take longer than seeding them, so
a pool of ``--pool`` conversations comes from ``generate_conversations`` and DuckDB SQL deals
them out to the N conversations (new ids and start times; owners drawn heavy-tailed: a few
entities own many). Sizes are ``--scale`` times the real-history shape (default 0.05:
median 1 message of about 340 characters, a tail to hundreds of messages and conversations of
tens of KB), so that a million conversations take minutes, not hours.

Each file is seeded with the offline ``local`` backend into a new DuckDB file, in a fresh child
process, as a stream:

    await m.seed(read_source(path), keep_results=False)

so its peak RSS (VmHWM on Linux, else ``ru_maxrss``) measures the streaming path alone. Prints
conversations per second and peak RSS beside the child's RSS after start-up, and beside the
floor: the file read through once (DuckDB for Parquet, ``json.loads`` per line for JSONL).

    python benchmarks/stream_parquet.py [--conversations 1000000] [--entities 10000]
                                        [--scale 0.05] [--pool 20000] [--formats parquet jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import duckdb
from realistic import describe, generate_conversations

TARGET_MB = 1024


def load_pool(con: duckdb.DuckDBPyConnection, pool: int, scale: float, seed: int) -> None:
    """Table ``pool``: one row per message of ``pool`` realistic conversations, with its
    offset in seconds from its conversation's first message."""
    seeds = generate_conversations(pool, seed=seed, scale=scale)
    describe(seeds)
    rows = []
    for p, conv in enumerate(c for s in seeds for c in s["conversations"]):
        times = [calendar.timegm(time.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%SZ"))
                 for m in conv["messages"]]
        rows += [(p, pos, m["role"], m["content"], int(t - times[0]))
                 for pos, (m, t) in enumerate(zip(conv["messages"], times))]
    con.execute("CREATE TABLE pool (p INTEGER, pos INTEGER, role VARCHAR, content VARCHAR, "
                "offset_s INTEGER)")
    con.executemany("INSERT INTO pool VALUES (?, ?, ?, ?, ?)", rows)


def deal(con: duckdb.DuckDBPyConnection, n: int, pool: int, entities: int) -> None:
    """Table ``convs``: conversation c gets a pool conversation, an owner (heavy-tailed: the
    square of a uniform draw favours the first entities) and a start time in three years."""
    con.execute(f"""
        CREATE TABLE convs AS
        SELECT c, hash(c, 'pool') % {pool} AS p,
               'user-' || lpad(CAST(CAST(floor({entities} * pow(
                   (hash(c, 'owner') % 1000003) / 1000003.0, 2)) AS BIGINT) AS VARCHAR),
                   6, '0') AS entity_id,
               'conv-' || lpad(CAST(c AS VARCHAR), 7, '0') AS id,
               TIMESTAMP '2023-01-01' + to_seconds(CAST(hash(c, 'start') % 94608000 AS BIGINT))
                   AS started
        FROM range({n}) r(c)""")


def write_parquet(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """One row per message, each entity's conversations together, in time order."""
    con.execute(f"""
        COPY (SELECT v.entity_id, v.id AS conversation_id, m.role, m.content,
                     v.started + to_seconds(m.offset_s) AS timestamp
              FROM convs v JOIN pool m USING (p)
              ORDER BY v.entity_id, v.started, v.c, m.pos)
        TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 100000)""")


def write_jsonl(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """One conversation per line, every line in the order of its first message's time."""
    con.execute(f"""
        COPY (SELECT v.entity_id, v.id,
                     list({{'role': m.role, 'content': m.content,
                            'timestamp': strftime(v.started + to_seconds(m.offset_s),
                                                  '%Y-%m-%dT%H:%M:%SZ')}} ORDER BY m.pos)
                         AS messages
              FROM convs v JOIN pool m USING (p)
              GROUP BY v.c, v.entity_id, v.id, v.started
              ORDER BY v.started, v.c)
        TO '{path}' (FORMAT json)""")


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
             "skipped": result.skipped, "triples": result.total_triples, "seconds": elapsed,
             "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb()})


def floor_seconds(path: Path, fmt: str) -> float:
    """Reading the file through once, with nothing kept: the least any seeding can take."""
    started = time.perf_counter()
    if fmt == "parquet":
        con = duckdb.connect()
        result = con.execute(f"SELECT * FROM read_parquet('{path}')")
        while result.fetchmany(100_000):
            pass
        con.close()
    else:
        with open(path, "rb") as lines:
            for line in lines:
                json.loads(line)
    return time.perf_counter() - started


def seed_in_child(path: Path, db: Path) -> dict:
    context = mp.get_context("spawn")  # a fresh process: its peak RSS is the seeding's
    out = context.Queue()
    child = context.Process(target=seed_file, args=(str(path), str(db), out))
    child.start()
    stats = out.get()
    child.join()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--scale", type=float, default=0.05,
                        help="size of the conversations (1 = full realistic sizes)")
    parser.add_argument("--pool", type=int, default=20_000,
                        help="distinct realistic conversations dealt out to the N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="+", default=["parquet", "jsonl"],
                        choices=["parquet", "jsonl"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memori-bench-") as folder:
        started = time.perf_counter()
        con = duckdb.connect()
        con.execute("SET preserve_insertion_order = true")
        print(f"pool of {args.pool:,} conversations, scale {args.scale}, seed {args.seed}:")
        load_pool(con, args.pool, args.scale, args.seed)
        deal(con, args.conversations, args.pool, args.entities)
        messages, chars = con.execute("SELECT count(*), sum(length(content)) FROM convs "
                                      "JOIN pool USING (p)").fetchone()
        print(f"dealt out to {args.conversations:,} conversations of {args.entities:,} "
              f"entities: {messages:,} messages, {chars / 1e6:,.0f} M characters "
              f"({time.perf_counter() - started:.0f} s)")
        files = {}
        for fmt in args.formats:
            started = time.perf_counter()
            files[fmt] = Path(folder) / f"conversations.{fmt}"
            (write_parquet if fmt == "parquet" else write_jsonl)(con, files[fmt])
            print(f"wrote {fmt}: {files[fmt].stat().st_size / 2**20:,.0f} MB in "
                  f"{time.perf_counter() - started:.0f} s")
        con.close()
        for fmt, path in files.items():
            floor = floor_seconds(path, fmt)
            stats = seed_in_child(path, Path(folder) / f"{fmt}.duckdb")
            rate = stats["total"] / stats["seconds"]
            print(f"\n{fmt}: seeded {stats['total']:,} conversations ({stats['successful']:,} "
                  f"succeeded, {stats['failed']:,} failed, {stats['skipped']:,} skipped, "
                  f"{stats['triples']:,} triples) in {stats['seconds']:.0f} s: "
                  f"{rate:,.0f} conversations/s ({stats['seconds'] / floor:.1f}x the floor: "
                  f"reading the file through once, {floor:.0f} s)")
            verdict = "under" if stats["peak_rss_mb"] < TARGET_MB else "OVER"
            print(f"{fmt}: peak RSS of the seeding process {stats['peak_rss_mb']:,.0f} MB, "
                  f"{verdict} the {TARGET_MB:,} MB target (after start-up: "
                  f"{stats['rss_before_mb']:,.0f} MB)")
            path.unlink()


if __name__ == "__main__":
    main()
