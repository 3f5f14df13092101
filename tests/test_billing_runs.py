"""Issue 9, whole runs against the real loopback server: a Memori in several event loops
(point 3), per-kind retry budgets and runs that stop within seconds (6), malformed and
oversized answers (7), and no trace of the API key anywhere in the store (8)."""

from __future__ import annotations

import asyncio
import time

import pytest

from memori_nb import Memori, SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.stores import DuckDBStore
from memori_nb.testing import (AugmentationServer, Fault, fail_first,
                               fail_when_content_contains, refusing_url, sequence)

from helpers import API_KEY, conversation, seed_with_fake_time

def many(n, text="I live in Porto and I love hiking."):
    return [conversation(f"c{i}", text, "Nice!") for i in range(n)]


def run_seed(url, conversations, *, fake_time, store=None, config=None, **backend_kwargs):
    store = store or DuckDBStore(":memory:")
    backend = MemoriBackend(**{"api_key": API_KEY, "base_url": url, **backend_kwargs})
    return seed_with_fake_time(backend, conversations, store, fake_time=fake_time,
                               config=config), store


def key_parts(text: str, key: str = API_KEY, size: int = 8) -> set[str]:
    return {key[i:i + size] for i in range(len(key) - size + 1)} & {
        text[i:i + size] for i in range(len(text) - size + 1)}


def every_stored_text(store: DuckDBStore) -> str:
    """Every value of every table, as text."""
    tables = store.sql("select table_name from information_schema.tables").table_name
    return "\n".join(store.sql(f'select * from "{t}"').astype(str).to_csv() for t in tables)


# --- point 3 ------------------------------------------------------------------------------------

def test_a_memori_seeds_in_one_asyncio_run_after_another(server):
    m = Memori(conn=":memory:", backend="memori", api_key=API_KEY, base_url=server.url)
    first = SeedData.for_conversations(entity_id="u1", conversations=many(3))
    second = SeedData.for_conversations(entity_id="u2", conversations=many(4))
    assert asyncio.run(m.seed(first)).successful == 3
    assert asyncio.run(m.seed(second)).successful == 4
    assert server.request_count == 7  # every conversation billed once, none failed
    again = asyncio.run(m.seed(second))
    assert again.skipped == 4 and server.request_count == 7


# --- point 6 ------------------------------------------------------------------------------------

def test_an_unreachable_service_stops_the_run_within_seconds(fake_time):
    with refusing_url() as url:
        started = time.monotonic()
        result, _ = run_seed(url, many(40), fake_time=fake_time,
                             config=SeedConfig(batch_size=4))
    assert time.monotonic() - started < 2.0
    assert url in result.stopped_reason and "MEMORI_API_URL_BASE" in result.stopped_reason
    assert (result.successful, result.failed, result.skipped) == (0, 0, 40)
    assert len(fake_time.sleeps) <= 2 * 4 and max(fake_time.sleeps) <= 1.0


@pytest.mark.parametrize("fault", [None, Fault.redirect("https://elsewhere.test/v1")])
def test_a_wrong_endpoint_stops_the_run_at_once(fake_time, fault):
    with AugmentationServer(api_key=API_KEY, faults=fault and (lambda n, b: fault)) as server:
        url = server.url + ("/api" if fault is None else "")
        result, _ = run_seed(url, many(30), fake_time=fake_time,
                             config=SeedConfig(batch_size=3))
        assert server.request_count <= 3  # only what was already in flight
    assert ("answers 404" if fault is None else "redirects to") in result.stopped_reason
    assert result.failed == 0 and result.skipped == 30 and fake_time.sleeps == []


def test_one_429_after_two_5xx_does_not_stop_the_run(fake_time):
    faults = sequence(fail_first(2, Fault.status(503)), fail_first(3, Fault.rate_limited(5.0)))
    with AugmentationServer(api_key=API_KEY, faults=faults) as server:
        result, _ = run_seed(server.url, many(1), fake_time=fake_time,
                             config=SeedConfig(batch_size=1, max_retries=2))
    assert result.successful == 1 and result.stopped_reason is None


def test_429s_with_retry_after_are_waited_out_beyond_max_retries(fake_time):
    with AugmentationServer(api_key=API_KEY,
                            faults=fail_first(10, Fault.rate_limited(30.0))) as server:
        result, _ = run_seed(server.url, many(1), fake_time=fake_time,
                             config=SeedConfig(batch_size=1, max_retries=3))
        assert server.request_count == 11
    assert result.successful == 1 and fake_time.sleeps.count(30.0) >= 10


def test_429s_that_outlast_the_time_budget_stop_the_run(fake_time):
    with AugmentationServer(api_key=API_KEY,
                            faults=lambda n, b: Fault.rate_limited(100.0)) as server:
        result, _ = run_seed(server.url, many(3), fake_time=fake_time,
                             config=SeedConfig(batch_size=1, max_retries=3))
        assert server.request_count == 7  # at 0, 100, ... 600 s: then the budget is spent
    assert "still rate limited after 600 s" in result.stopped_reason
    assert result.skipped == 3


# --- point 7 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{"entity": {}}, {"entity": {"facts": "hello"}}])
def test_a_wrong_shape_is_retried_then_failed_and_nothing_is_stored(fake_time, body):
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: Fault.answer(body)) as server:
        result, store = run_seed(server.url, many(1), fake_time=fake_time,
                                 config=SeedConfig(max_retries=2))
        assert server.request_count == 3
    [only] = result.results
    assert only.status == "failed" and "malformed response body" in only.error
    assert store.sql("select count(*) n from facts").n[0] == 0
    assert store.sql("select count(*) n from seeded_conversations").n[0] == 0


def test_an_oversized_answer_fails_its_conversation_only(fake_time):
    endless = fail_when_content_contains("HUGE", Fault.endless())
    conversations = [conversation("huge", "HUGE I live in Oslo."), *many(2)]
    with AugmentationServer(api_key=API_KEY, faults=endless) as server:
        result, _ = run_seed(server.url, conversations, fake_time=fake_time,
                             max_response_bytes=256 * 1024)
        assert server.request_count == 3  # not retried: the same answer would come back
    huge, *rest = result.results
    assert huge.status == "failed" and "max_response_bytes" in huge.error
    assert [r.status for r in rest] == ["succeeded", "succeeded"]


# --- point 8 ------------------------------------------------------------------------------------

def test_the_key_never_reaches_results_or_the_store(fake_time):
    echo_answer = {"entity": {"facts": ["The header was {authorization}"], "triples": [
        {"subject": {"name": "user", "type": "person"}, "predicate": "sent",
         "object": {"name": "{authorization}", "type": "secret"}}]},
        "conversation": {"summary": "sent {authorization}"}}
    faults = sequence(
        fail_when_content_contains("REJECT", Fault.echo(422, {"detail": "p" * 290
                                                               + "{authorization}"})),
        fail_when_content_contains("BROKEN", Fault.echo(500, "x" * 295 + " {authorization}")),
        fail_when_content_contains("ECHO", Fault.echo(200, echo_answer)))
    conversations = [conversation("reject", "REJECT me"), conversation("broken", "BROKEN"),
                     conversation("echo", "ECHO my header"), *many(1)]
    with AugmentationServer(api_key=API_KEY, faults=faults) as server:
        result, store = run_seed(server.url, conversations, fake_time=fake_time,
                                 config=SeedConfig(max_retries=1))
    assert [r.status for r in result.results] == ["failed", "failed", "succeeded", "succeeded"]
    assert not key_parts(repr(result.results))
    stored = every_stored_text(store)
    assert "Bearer ***" in stored and not key_parts(stored)


def test_a_quota_stop_inside_a_chunked_conversation_keeps_the_paid_chunks(tmp_path):
    """Chunk 1 is paid for, chunk 2 meets the quota: the next run sends chunks 2 and 3 only,
    carrying chunk 1's summary, and the facts of all three are stored."""
    import asyncio

    from memori_nb import Memori, SeedConfig, SeedData
    from memori_nb.testing import AugmentationServer, Fault

    texts = ["I live in Lisbon.", "Nice.", "I have a dog named Rex.", "Cute.",
             "I work at Acme.", "Great."]
    data = SeedData.for_conversations(entity_id="u1", conversations=[conversation("c1", *texts)])
    config = SeedConfig(max_messages_per_request=2)
    db = str(tmp_path / "m.duckdb")

    def rule(number, body):
        return Fault.quota_exceeded() if number == 2 else None

    with AugmentationServer(api_key=API_KEY, faults=rule) as server:
        m = Memori(conn=db, backend="memori", api_key=API_KEY, base_url=server.url)
        first = asyncio.run(m.seed(data, seed_config=config))
        assert first.stopped_reason and first.skipped == 1
        assert first.conversations[0].reason == ("run stopped (quota exhausted) after 1 of 3 "
                                                 "chunks; the next run sends the rest")
        m.close()
        sent_first = server.request_count
        m = Memori(conn=db, backend="memori", api_key=API_KEY, base_url=server.url)
        second = asyncio.run(m.seed(data, seed_config=config))
        bodies = [r.body for r in server.requests[sent_first:]]
    assert second.successful == 1 and len(bodies) == 2  # chunks 2 and 3, nothing again
    assert bodies[0]["conversation"]["messages"][0]["content"] == "I have a dog named Rex."
    assert bodies[0]["conversation"]["summary"]  # chunk 1's summary carried over
    facts = set(m.facts("u1").fact)
    assert {"user lives_in Lisbon", "user has_dog Rex", "user works_at Acme"} <= facts
    assert m.sql("SELECT count(*) AS n FROM partial_conversations").n[0] == 0
    m.close()
