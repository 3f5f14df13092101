"""Throughput of the engine against the loopback AA server with log-normal latency.

Seeds realistic conversations (``realistic.py``: 1,000 conversations, median 18 messages,
a heavy tail up to 1M characters, some sent in several chunks) through the ``memori``
backend and its default HTTP client into DuckDB; the server (median 300 ms, sigma 0.6) runs
in its own process, so its threads do not share the client's GIL or CPU time. For each batch
size it prints:

- conv/s and the ratio to the concurrency bound (``batch_size / mean latency``, the latency
  the server drew for the requests it answered);
- the in-order ideal: the ratio a zero-overhead sliding window would reach sending the same
  requests in the same order with the same latencies (a long tail of one slow request keeps
  the last window from filling, so no client reaches 1.0);
- the client process's CPU time per conversation (engine, HTTP, store writes; the server is
  elsewhere), the part of it the event loop's thread spent, and the TCP connections the
  server accepted;
- a CPU floor measured in the same run, after the client: the least any client does with
  these conversations (each request body encoded as the memori backend encodes it and handed
  to a loopback socket that another process reads, every message stored in one bulk DuckDB
  insert). Both vary with the machine's load from minute to minute;
- where the gap to the ideal goes: the mean latency a request sees from the client (the
  backend's call) beyond the latency the server drew, the time before the first request and
  the time after the last answer (the last write, the journal, the run's record).

``--tiny`` seeds two-line conversations instead: a lower bound on the client's cost.
``--repeat N`` measures each batch size N times, the sizes taking turns, and ends with each
size's range: the host's load moves these figures by more than most changes do.

    python benchmarks/throughput.py [--conversations 1000] [--batch-sizes 10 50 200] [--tiny]
                                    [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import multiprocessing as mp
import socket
import statistics
import tempfile
import time
from pathlib import Path

from floor import append_messages
from realistic import describe, generate_conversations

from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.backends.memori import default_client
from memori_nb.engine import seed_all
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, lognormal_latency


def tiny_conversations(n: int) -> list[dict]:
    """Two-line conversations under one entity: the lower bound on the client's work."""
    return [{"entity_id": "bench", "conversations": [{"id": f"conv-{i}", "messages": [
        {"role": "user", "content": f"I live in Porto and I love hiking, note {i}."},
        {"role": "assistant", "content": "Sounds lovely!"}]} for i in range(n)]}]


def serve(seed: int, urls: mp.Queue, stop: mp.Event, results: mp.Queue) -> None:
    """Run the loopback server in its own process until ``stop``; report what it saw."""
    latency = lognormal_latency(0.3, 0.6, seed=seed)
    with AugmentationServer(api_key="bench", latency=latency) as server:
        # Warm the server up (imports, compiled patterns) as a real service would be.
        server.extract([{"role": "user", "content": "I live in Porto."}], None)
        urls.put(server.url)
        stop.wait()
        results.put((server.latencies, server.max_in_flight, server.connection_count))


def discard(ports: mp.Queue) -> None:
    """Accept one loopback connection and read it to its end (the floor's receiver)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ports.put(listener.getsockname()[1])
        connection, _ = listener.accept()
        with connection:
            while connection.recv(1 << 20):
                pass


def cpu_floor(seeds: list[dict], folder: Path) -> float:
    """Process CPU seconds per conversation of the least a client does with ``seeds``: each
    request body encoded as the memori backend encodes it (compact JSON, ASCII escapes) and
    sent on one loopback connection, then every message appended to a new DuckDB table in
    one bulk insert. No validation, hashing, HTTP, answers, journal or memories."""
    ports = mp.Queue()
    receiver = mp.Process(target=discard, args=(ports,), daemon=True)
    receiver.start()
    try:
        sender = socket.create_connection(("127.0.0.1", ports.get(timeout=60)))
        cpu, count = time.process_time(), 0
        with sender:
            for seed in seeds:
                for conversation in seed["conversations"]:
                    body = {"conversation": {"messages": [
                        {"role": m["role"], "content": m["content"]}
                        for m in conversation["messages"]], "summary": None}}
                    sender.sendall(json.dumps(body, separators=(",", ":"),
                                              allow_nan=False).encode("ascii"))
                    count += 1
        append_messages(seeds, Path(tempfile.mkdtemp(dir=folder)) / "floor.duckdb")
        return (time.process_time() - cpu) / count
    finally:
        receiver.join(timeout=60)


class TimedBackend(MemoriBackend):
    """The memori backend, timing each request as the engine sees it (start, end)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spans: list[tuple[float, float]] = []

    async def augment(self, request):
        started = time.perf_counter()
        try:
            return await super().augment(request)
        finally:
            self.spans.append((started, time.perf_counter()))


async def seed_against(url: str, seeds: list[dict], batch_size: int, folder: Path
                       ) -> tuple[float, float, int, dict]:
    """Seed ``seeds`` once: (wall seconds, process CPU seconds, conversations seeded, where
    the time went)."""
    # Set-up outside the timing, as a user's session would have done once: the HTTP client
    # (loading TLS certificates takes ~0.1 s; httpx's first request imports its I/O stack)
    # and the schema.
    client = default_client()
    await client.get(url + "/warm-up")  # a 404 from the server: no latency, not counted
    backend = TimedBackend(api_key="bench", base_url=url, client=client)
    # A new file each time: a batch size measured twice must not find its conversations
    # already seeded.
    store = DuckDBStore(Path(tempfile.mkdtemp(dir=folder)) / f"bench-{batch_size}.duckdb")
    store.build()  # one-time set-up, as m.config.storage.build(); not part of the throughput
    data = [SeedData.for_conversations(entity_id=s["entity_id"],
                                       conversations=s["conversations"]) for s in seeds]
    loop_cpu, cpu, started = time.thread_time(), time.process_time(), time.perf_counter()
    result = await seed_all(data, backend=backend, store=store,
                            config=SeedConfig(batch_size=batch_size))
    ended = time.perf_counter()
    elapsed, cpu = ended - started, time.process_time() - cpu
    timing = {"loop_cpu": time.thread_time() - loop_cpu,
              "client_latency": statistics.fmean(end - start for start, end in backend.spans),
              "before_first": min(start for start, _ in backend.spans) - started,
              "after_last": ended - max(end for _, end in backend.spans)}
    await client.aclose()
    store.close()
    total = sum(len(s["conversations"]) for s in seeds)
    assert result.successful == total, result.summary_dict()
    return elapsed, cpu, total, timing


def measure(seeds: list[dict], batch_size: int, folder: Path) -> dict:
    urls, results, stop = mp.Queue(), mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(batch_size, urls, stop, results))
    server.start()
    try:
        elapsed, cpu, n, timing = asyncio.run(seed_against(urls.get(timeout=60), seeds, batch_size,
                                                   folder))
    finally:
        stop.set()
    latencies, max_in_flight, connections = results.get(timeout=60)
    server.join(timeout=20)
    mean_latency = statistics.fmean(latencies)
    bound = batch_size / mean_latency
    floor_ms = cpu_floor(seeds, folder) * 1000
    rate = n / elapsed
    return {"batch_size": batch_size, "seconds": elapsed, "rate": rate, "bound": bound,
            "mean_latency": mean_latency, "ratio": rate / bound,
            "ideal_ratio": n / ideal_makespan(latencies, batch_size) / bound,
            "cpu_ms": cpu / n * 1000, "loop_cpu_ms": timing["loop_cpu"] / n * 1000,
            "floor_ms": floor_ms, "requests": len(latencies),
            "connections": connections, "max_in_flight": max_in_flight,
            "overhead_ms": (timing["client_latency"] - mean_latency) * 1000,
            "before_first_ms": timing["before_first"] * 1000,
            "after_last_ms": timing["after_last"] * 1000}


def ideal_makespan(latencies: list[float], slots: int) -> float:
    """The finish time of a perfect sliding window over these latencies in this order,
    with zero overhead: what no client sending in this order can beat."""
    free_at = [0.0] * slots
    for latency in latencies:
        heapq.heappush(free_at, heapq.heappop(free_at) + latency)
    return max(free_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--seed", type=int, default=0, help="the realistic generator's seed")
    parser.add_argument("--tiny", action="store_true",
                        help="two-line conversations instead (a lower bound on client cost)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each batch size this many times, taking turns")
    args = parser.parse_args()
    if args.tiny:
        seeds = tiny_conversations(args.conversations)
        print(f"{args.conversations} two-line conversations (lower bound)")
    else:
        seeds = generate_conversations(args.conversations, seed=args.seed)
        print(f"{args.conversations} realistic conversations (seed {args.seed}):")
        describe(seeds)
    print("server latency log-normal median 300 ms sigma 0.6, in its own process")
    runs: dict[int, list[dict]] = {size: [] for size in args.batch_sizes}
    with tempfile.TemporaryDirectory() as folder:
        for batch_size in [size for _ in range(args.repeat) for size in args.batch_sizes]:
            r = measure(seeds, batch_size, Path(folder))
            runs[batch_size].append(r)
            print(f"batch {r['batch_size']:>3}: {r['rate']:6.1f} conv/s in {r['seconds']:5.1f} s;"
                  f" bound {r['bound']:6.1f} (mean latency {r['mean_latency'] * 1000:.0f} ms);"
                  f" ratio {r['ratio']:.3f}, in-order ideal {r['ideal_ratio']:.3f};"
                  f" client CPU {r['cpu_ms']:.2f} ms/conv (event loop's thread"
                  f" {r['loop_cpu_ms']:.2f}), {r['cpu_ms'] / r['floor_ms']:.2f}x"
                  f" the floor's {r['floor_ms']:.2f}; {r['requests']} requests over"
                  f" {r['connections']} connections, max in flight {r['max_in_flight']}",
                  flush=True)
            print(f"           a request took {r['overhead_ms']:.1f} ms longer in the client "
                  f"than the server's latency; {r['before_first_ms']:.0f} ms before the first"
                  f" request, {r['after_last_ms']:.0f} ms after the last answer", flush=True)
    if args.repeat > 1:
        for batch_size, measured in runs.items():
            print(f"batch {batch_size:>3}, {len(measured)} runs: ratio {_span(measured, 'ratio')}"
                  f" (ideal {_span(measured, 'ideal_ratio')}), client CPU"
                  f" {_span(measured, 'cpu_ms', 2)} ms/conv, floor {_span(measured, 'floor_ms', 2)}")


def _span(runs: list[dict], key: str, digits: int = 3) -> str:
    values = [r[key] for r in runs]
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


if __name__ == "__main__":
    main()
