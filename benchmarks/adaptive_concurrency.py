"""Adaptive concurrency against a provider that caps requests in flight (issue 10, target 3).

The loopback server (its own process, log-normal latency) answers at most ``--cap`` requests
at once and refuses the rest at once with 429 and no Retry-After. The engine runs with a
window wider than the cap (``--batch-size``) and must find the cap. Printed beside it, in the
same run: the cap's bound (cap / mean latency of the requests served) and the same engine
told the cap in advance (``batch_size=cap``).

    python benchmarks/adaptive_concurrency.py [--conversations 600] [--cap 10] [--batch-size 40]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from realistic import generate_conversations

from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.backends.memori import default_client
from memori_nb.engine import seed_all
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, lognormal_latency


def serve(cap: int, urls: mp.Queue, stop: mp.Event, results: mp.Queue) -> None:
    """The capped server in its own process, so it does not share the client's GIL."""
    latency = lognormal_latency(0.3, 0.6, seed=cap)
    with AugmentationServer(api_key="bench", latency=latency,
                            concurrency_limit=cap) as server:
        server.extract([{"role": "user", "content": "I live in Porto."}], None)
        urls.put(server.url)
        stop.wait()
        served = [r for r in server.requests if r.served]
        results.put((server.latencies, server.refused_count, len(served)))


async def seed_against(url: str, seeds: list[SeedData], batch_size: int, db: Path):
    client = default_client()
    await client.get(url + "/warm-up")  # a 404: imports and connection set-up, not counted
    backend = MemoriBackend(api_key="bench", base_url=url, client=client)
    store = DuckDBStore(db)
    store.build()
    started = time.perf_counter()
    result = await seed_all(seeds, backend=backend, store=store,
                            config=SeedConfig(batch_size=batch_size))
    elapsed = time.perf_counter() - started
    await client.aclose()
    store.close()
    return result, elapsed


def measure(seeds: list[SeedData], cap: int, batch_size: int, folder: Path) -> dict:
    urls, results, stop = mp.Queue(), mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(cap, urls, stop, results))
    server.start()
    try:
        result, elapsed = asyncio.run(seed_against(
            urls.get(timeout=30), seeds, batch_size, folder / f"b{batch_size}.duckdb"))
    finally:
        stop.set()
    latencies, refused, served = results.get(timeout=30)
    server.join(timeout=10)
    bound = cap / statistics.fmean(latencies)
    return {"result": result, "rate": served / elapsed, "bound": bound,
            "refused": refused, "served": served, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=600)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=40)
    args = parser.parse_args()
    data = generate_conversations(args.conversations, seed=1)
    seeds = [SeedData.for_conversations(entity_id=e["entity_id"],
                                        conversations=e["conversations"]) for e in data]
    print(f"{args.conversations} realistic conversations; server cap {args.cap} in flight, "
          f"latency log-normal median 300 ms sigma 0.6; requests/s against the cap's bound")
    with tempfile.TemporaryDirectory() as folder:
        for label, batch in (("window wider than the cap", args.batch_size),
                             ("reference: batch_size = cap", args.cap)):
            r = measure(seeds, args.cap, batch, Path(folder))
            res = r["result"]
            print(f"  {label:28s} batch {batch:>3}: {res.successful}/{res.total} succeeded, "
                  f"stopped: {res.stopped_reason or 'no'}; {r['rate']:6.1f} requests/s, bound "
                  f"{r['bound']:6.1f}, ratio {r['rate'] / r['bound']:.3f}; 429s {r['refused']}"
                  f" for {r['served']} requests served")


if __name__ == "__main__":
    main()
