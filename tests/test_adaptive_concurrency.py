"""A provider that caps requests in flight: the engine finds the cap instead of stopping the
run or hammering the service (issue 10, target 3)."""

from __future__ import annotations

from memori_nb import SeedConfig
from memori_nb.testing import AugmentationServer, Fault

from helpers import API_KEY
from test_engine import many, run_seed

CAP = 10


def test_a_window_wider_than_the_cap_narrows_to_it_and_every_conversation_succeeds():
    latency = 0.1
    with AugmentationServer(api_key=API_KEY, latency=latency,
                            concurrency_limit=CAP) as server:
        result, _ = run_seed(server, many(300), config=SeedConfig(batch_size=40,
                                                                 retry_delay=latency))
    assert result.stopped_reason is None
    assert (result.successful, result.failed, result.skipped) == (300, 0, 0)
    requests = server.requests
    served = [r for r in requests if r.served]
    assert len(served) == 300  # each conversation answered once: no retry was lost
    # The first burst is refused beyond the cap (40 - 10); after that only the rare probe
    # above it: the refusals do not grow with the conversations.
    assert server.refused_count <= 40 - CAP + 15
    # Throughput against the cap's (cap / latency), on the server's clock: requests served
    # times their latency over the time the run kept the server busy (Little's law).
    busy = max(r.received_at for r in served) + latency - requests[0].received_at
    assert len(served) * latency / busy >= 0.8 * CAP


def test_refusals_past_the_first_burst_stay_few_however_long_the_run():
    # Twice the conversations, about the same refusals: probing slows down each time.
    counts = []
    for n in (150, 600):
        with AugmentationServer(api_key=API_KEY, latency=0.02,
                                concurrency_limit=CAP) as server:
            result, _ = run_seed(server, many(n), config=SeedConfig(batch_size=2 * CAP,
                                                                   retry_delay=0.02))
        assert result.successful == n
        counts.append(server.refused_count)
    assert counts[1] <= counts[0] + 8


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
    answers = []
    with AugmentationServer(latency=0.3, concurrency_limit=2,
                            extract=lambda m, s: {"ok": 1}) as server:
        threads = [threading.Thread(target=lambda: answers.append(
            httpx.post(server.endpoint, json=body))) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        later = httpx.post(server.endpoint, json=body)
    assert sorted(a.status_code for a in answers) == [200, 200, 429, 429, 429]
    assert all("retry-after" not in a.headers for a in answers)
    assert server.refused_count == 3 and later.status_code == 200
