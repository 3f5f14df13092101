"""Throughput of the engine against the loopback AA server with log-normal latency.

Prints conversations per second and the ratio to the concurrency bound
(batch_size / mean latency) for each batch size.

    python benchmarks/throughput.py [--conversations 1000] [--batch-sizes 10 50]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.backends.memori import default_client
from memori_nb.engine import seed_all
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, lognormal_latency


def conversations(n: int) -> list[dict]:
    return [{"id": f"conv-{i}", "messages": [
        {"role": "user", "content": f"I live in Porto and I love hiking, note {i}."},
        {"role": "assistant", "content": "Sounds lovely!"}]} for i in range(n)]


def serve(batch_size: int, urls: mp.Queue, stop: mp.Event, latencies: mp.Queue) -> None:
    """Run the loopback server in its own process, so its threads do not share the
    client's GIL: the figures then measure the client, not the server."""
    latency = lognormal_latency(0.3, 0.6, seed=batch_size)
    with AugmentationServer(api_key="bench", latency=latency) as server:
        # Warm the server up (imports, compiled patterns) as a real service would be.
        server.extract([{"role": "user", "content": "I live in Porto."}], None)
        urls.put(server.url)
        stop.wait()
        latencies.put((server.latencies, server.max_in_flight))


async def seed_against(url: str, n: int, batch_size: int, folder: Path) -> float:
    # Set-up outside the timing, as a user's session would have done once: the HTTP client
    # (loading TLS certificates takes ~0.1 s; httpx's first request imports its I/O stack,
    # ~0.07 s) and the schema.
    client = default_client()
    await client.get(url + "/warm-up")  # a 404 from the server: no latency, not counted
    backend = MemoriBackend(api_key="bench", base_url=url, client=client)
    store = DuckDBStore(folder / f"bench-{batch_size}.duckdb")
    store.build()  # one-time set-up, as m.config.storage.build(); not part of the throughput
    seeds = [SeedData.for_conversations(entity_id="bench", conversations=conversations(n))]
    started = time.perf_counter()
    result = await seed_all(seeds, backend=backend, store=store,
                            config=SeedConfig(batch_size=batch_size))
    elapsed = time.perf_counter() - started
    await client.aclose()
    store.close()
    assert result.successful == n, result.summary_dict()
    return elapsed


def measure(n: int, batch_size: int, folder: Path) -> dict:
    urls, results, stop = mp.Queue(), mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(batch_size, urls, stop, results))
    server.start()
    try:
        elapsed = asyncio.run(seed_against(urls.get(timeout=30), n, batch_size, folder))
    finally:
        stop.set()
    latencies, max_in_flight = results.get(timeout=30)
    server.join(timeout=10)
    mean_latency = statistics.fmean(latencies)
    rate = n / elapsed
    bound = batch_size / mean_latency
    ideal = n / ideal_makespan(latencies, batch_size) / bound
    return {"batch_size": batch_size, "seconds": elapsed, "rate": rate,
            "mean_latency": mean_latency, "bound": bound, "ratio": rate / bound,
            "ideal_ratio": ideal, "max_in_flight": max_in_flight}


def ideal_makespan(latencies: list[float], slots: int) -> float:
    """The finish time of a perfect sliding window over these latencies in this order,
    with zero overhead: what no client can beat without knowing latencies in advance."""
    free_at = [0.0] * slots
    for latency in latencies:
        heapq.heappush(free_at, heapq.heappop(free_at) + latency)
    return max(free_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    print(f"{args.conversations} conversations, latency log-normal median 300 ms sigma 0.6")
    with tempfile.TemporaryDirectory() as folder:
        for batch_size in args.batch_sizes:
            r = measure(args.conversations, batch_size, Path(folder))
            print(f"batch_size {r['batch_size']:>3}: {r['rate']:7.1f} conv/s in "
                  f"{r['seconds']:5.1f} s; mean latency {r['mean_latency'] * 1000:.0f} ms; "
                  f"bound {r['bound']:6.1f} conv/s; ratio {r['ratio']:.3f} (a zero-overhead "
                  f"window over the same latencies: {r['ideal_ratio']:.3f}); "
                  f"max in flight {r['max_in_flight']}")


if __name__ == "__main__":
    main()
