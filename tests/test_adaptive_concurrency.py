"""A provider that caps requests in flight: the engine finds the cap instead of stopping the
run or hammering the service (issue 10, target 3)."""

from __future__ import annotations

import asyncio

from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.engine import seed_all
from memori_nb.progress import postfix_for
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, Fault

from helpers import API_KEY
from test_engine import many, run_seed

CAP = 10


def test_a_window_wider_than_the_cap_narrows_to_it_and_every_conversation_succeeds():
    with AugmentationServer(api_key=API_KEY, latency=0.1,
                            concurrency_limit=CAP) as server:
        result, _ = run_seed(server, many(300), config=SeedConfig(batch_size=40,
                                                                 retry_delay=0.1))
    assert result.stopped_reason is None
    assert (result.successful, result.failed, result.skipped) == (300, 0, 0)
    served = [r.served for r in server.requests if r.served]
    assert len(served) == 300  # each conversation answered once: no retry was lost
    # The first burst is refused beyond the cap (40 - 10), then only the rare probe above it.
    assert server.refused_count <= 40 - CAP + 15
    # The window stayed at the cap rather than collapsing: late in the run the service
    # still gets as many requests at once as it takes. (benchmarks/adaptive_concurrency.py
    # prints the throughput against the cap's bound.)
    assert max(served[len(served) // 2:]) >= 0.8 * CAP


class _LastPostfix:
    """A progress display that keeps what the bar would show last."""

    def start(self, counters):
        self.postfix = postfix_for(counters)

    def update(self, counters, result):
        self.postfix = postfix_for(counters)

    def close(self, counters):
        pass


def seed_showing(server, n, batch_size):
    display = _LastPostfix()

    async def go():
        backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
        try:
            await seed_all([SeedData.for_conversations(entity_id="u1", conversations=many(n))],
                           backend=backend, store=DuckDBStore(":memory:"), progress=display,
                           config=SeedConfig(batch_size=batch_size, retry_delay=0.05))
        finally:
            await backend.aclose()

    asyncio.run(go())
    return display.postfix


def test_the_progress_bar_shows_the_window_once_the_service_refuses():
    with AugmentationServer(api_key=API_KEY, latency=0.05, concurrency_limit=CAP) as server:
        capped = seed_showing(server, 80, batch_size=3 * CAP)
    assert 1 <= capped["in flight"] <= 3 * CAP
    with AugmentationServer(api_key=API_KEY, latency=0.01) as server:
        assert "in flight" not in seed_showing(server, 5, batch_size=3 * CAP)


def test_refusals_stay_few_however_long_the_run():
    # A probe above the cap every other window would cost about 50 refusals here; each
    # episode halving the pace of probing costs a handful past the first burst.
    with AugmentationServer(api_key=API_KEY, latency=0.02,
                            concurrency_limit=CAP) as server:
        result, _ = run_seed(server, many(1000), config=SeedConfig(batch_size=2 * CAP,
                                                                  retry_delay=0.02))
    assert result.successful == 1000
    assert server.refused_count <= CAP + 25


def test_a_quota_429_still_stops_the_run_with_the_window_open(fake_time):
    quota = lambda n, body: Fault.quota_exceeded() if n >= 3 else None  # noqa: E731
    with AugmentationServer(api_key=API_KEY, faults=quota) as server:
        result, _ = run_seed(server, many(6), fake_time=fake_time,
                             config=SeedConfig(batch_size=1))
    assert "quota" in result.stopped_reason.lower()
    assert (result.successful, result.skipped) == (2, 4)


def test_a_429_with_retry_after_holds_every_worker_and_keeps_the_window(fake_time):
    with AugmentationServer(api_key=API_KEY,
                            faults=lambda n, b: Fault.rate_limited(3.0) if n == 1 else None
                            ) as server:
        result, _ = run_seed(server, many(8), fake_time=fake_time,
                             config=SeedConfig(batch_size=4))
    assert result.successful == 8
    assert 3.0 in fake_time.sleeps
    # Every other request waited out the gate; none was refused, none was lost.
    assert server.request_count == 9


def test_the_server_refuses_beyond_its_limit_at_once_without_retry_after():
    import threading

    import httpx

    body = {"conversation": {"messages": [{"role": "user", "content": "hi"}]}}
    arrived = threading.Event()

    def extract(messages, summary):  # the served requests wait until all five arrived
        arrived.wait(10)
        return {"ok": 1}

    answers = []
    with AugmentationServer(concurrency_limit=2, extract=extract) as server:
        threads = [threading.Thread(target=lambda: answers.append(
            httpx.post(server.endpoint, json=body, timeout=20))) for _ in range(5)]
        for thread in threads:
            thread.start()
        while server.request_count < 5:
            threading.Event().wait(0.01)
        arrived.set()
        for thread in threads:
            thread.join()
        later = httpx.post(server.endpoint, json=body)
    assert sorted(a.status_code for a in answers) == [200, 200, 429, 429, 429]
    assert all("retry-after" not in a.headers for a in answers)
    assert server.refused_count == 3 and later.status_code == 200


def test_cancelled_waiters_give_their_places_back():
    import asyncio

    from memori_nb.engine import _Window

    async def go():
        window = _Window(2)
        window.release(await window.acquire(), "refused")  # the limit is now 1
        first = await window.acquire()
        waiting = [asyncio.create_task(window.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        waiting[0].cancel()
        waiting[1].cancel()
        window.release(first, "ok")  # wakes the one waiter left, past the cancelled ones
        await asyncio.gather(*waiting, return_exceptions=True)
        assert waiting[0].cancelled() and waiting[1].cancelled()
        assert waiting[2].done() and not waiting[2].cancelled()
        assert window.in_flight == 1
        window.release(waiting[2].result(), "ok")
        return window.in_flight, window.current

    assert asyncio.run(go()) == (0, 1)
