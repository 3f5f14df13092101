"""Throughput of the engine against the loopback AA server with log-normal latency.

Prints conversations per second and the ratio to the concurrency bound
(batch_size / mean latency) for each batch size.

    python benchmarks/throughput.py [--conversations 1000] [--batch-sizes 10 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.engine import seed_all
from memori_nb.store import DuckDBStore
from memori_nb.testing import AugmentationServer, lognormal_latency


def conversations(n: int) -> list[dict]:
    return [{"id": f"conv-{i}", "messages": [
        {"role": "user", "content": f"I live in Porto and I love hiking, note {i}."},
        {"role": "assistant", "content": "Sounds lovely!"}]} for i in range(n)]


async def measure(n: int, batch_size: int, folder: Path) -> dict:
    latency = lognormal_latency(0.3, 0.6, seed=batch_size)
    with AugmentationServer(api_key="bench", latency=latency) as server:
        backend = MemoriBackend(api_key="bench", base_url=server.url)
        store = DuckDBStore(folder / f"bench-{batch_size}.duckdb")
        seeds = [SeedData.for_conversations(entity_id="bench", conversations=conversations(n))]
        started = time.perf_counter()
        result = await seed_all(seeds, backend=backend, store=store,
                                config=SeedConfig(batch_size=batch_size))
        elapsed = time.perf_counter() - started
        await backend.aclose()
        store.close()
        mean_latency = statistics.fmean(server.latencies)
    assert result.successful == n, result.summary_dict()
    rate = n / elapsed
    bound = batch_size / mean_latency
    return {"batch_size": batch_size, "seconds": elapsed, "rate": rate,
            "mean_latency": mean_latency, "bound": bound, "ratio": rate / bound,
            "max_in_flight": server.max_in_flight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    print(f"{args.conversations} conversations, latency log-normal median 300 ms sigma 0.6")
    with tempfile.TemporaryDirectory() as folder:
        for batch_size in args.batch_sizes:
            r = asyncio.run(measure(args.conversations, batch_size, Path(folder)))
            print(f"batch_size {r['batch_size']:>3}: {r['rate']:7.1f} conv/s in "
                  f"{r['seconds']:5.1f} s; mean latency {r['mean_latency'] * 1000:.0f} ms; "
                  f"bound {r['bound']:6.1f} conv/s; ratio {r['ratio']:.3f}; "
                  f"max in flight {r['max_in_flight']}")


if __name__ == "__main__":
    main()
