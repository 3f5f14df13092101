"""The engine against a real loopback AA server: concurrency, retries, stops, ledger."""

from __future__ import annotations

import asyncio

import duckdb
import pytest

from memori_nb import Memori, SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.engine import seed_all
from memori_nb.models import Extraction, Triple
from memori_nb.stores import DuckDBStore
from memori_nb.stores import writer as writer_module
from memori_nb.testing import (AugmentationServer, Fault, fail_first,
                               fail_when_content_contains, sequence)

from helpers import API_KEY, conversation


def run_seed(server, conversations, *, store=None, fake_time=None, config=None,
             force=False, on_progress=None, entity_id="user-1", process_id=None):
    store = store or DuckDBStore(":memory:")
    seeds = [SeedData.for_conversations(entity_id=entity_id, conversations=conversations,
                                        process_id=process_id)]

    async def go():
        backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
        try:
            extra = {} if fake_time is None else {"sleep": fake_time.sleep,
                                                  "clock": fake_time.clock}
            return await seed_all(seeds, backend=backend, store=store,
                                  config=config or SeedConfig(), force=force,
                                  on_progress=on_progress, jitter=lambda: 0.0, **extra)
        finally:
            await backend.aclose()

    return asyncio.run(go()), store


def many(n, text="I live in Porto and I love hiking."):
    return [conversation(f"c{i}", text, "Nice!") for i in range(n)]


def test_at_most_batch_size_requests_are_in_flight():
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        result, _ = run_seed(server, many(24), config=SeedConfig(batch_size=4))
    assert result.successful == 24
    assert server.max_in_flight == 4


def test_window_slides_past_a_slow_request():
    # One slow conversation must not hold back the rest, as a fixed batch would.
    slow = fail_when_content_contains("SLOW", Fault.delay(0.4))
    conversations = [conversation("slow", "SLOW I live in Oslo.")] + many(8)
    order = []
    with AugmentationServer(api_key=API_KEY, latency=0.01, faults=slow) as server:
        result, _ = run_seed(server, conversations, config=SeedConfig(batch_size=2),
                             on_progress=lambda done, total, r: order.append(r.conversation_id))
    assert result.successful == 9
    assert order[-1] == "slow"
    # Results keep input order even though completion order differs.
    assert [r.conversation_id for r in result.results] == [c["id"] for c in conversations]


def test_transient_failures_are_retried_with_exponential_backoff(fake_time):
    with AugmentationServer(api_key=API_KEY,
                            faults=fail_first(3, Fault.status(503))) as server:
        result, _ = run_seed(server, many(1), fake_time=fake_time,
                             config=SeedConfig(batch_size=1, retry_delay=1.0))
    assert result.successful == 1
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    assert server.request_count == 4


def test_dropped_connections_and_malformed_answers_are_retried(fake_time):
    faults = sequence(fail_first(1, Fault.drop()),
                      lambda n, body: Fault.malformed() if n == 2 else None)
    with AugmentationServer(api_key=API_KEY, faults=faults) as server:
        result, _ = run_seed(server, many(1), fake_time=fake_time,
                             config=SeedConfig(batch_size=1))
    assert result.successful == 1
    assert server.request_count == 3


def test_failures_that_outlast_retries_fail_the_conversation(fake_time):
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: Fault.malformed()) as server:
        result, store = run_seed(server, many(1), fake_time=fake_time,
                                 config=SeedConfig(max_retries=2))
    [only] = result.results
    assert only.status == "failed" and result.total_triples == 0
    assert "malformed" in only.error and "after 3 attempts" in only.error
    assert "'c0'" in only.error
    assert store.sql("select count(*) n from seeded_conversations").n[0] == 0


def test_retry_after_is_honoured_by_every_worker(fake_time):
    with AugmentationServer(api_key=API_KEY,
                            faults=fail_first(1, Fault.rate_limited(7.5))) as server:
        result, _ = run_seed(server, many(3), fake_time=fake_time,
                             config=SeedConfig(batch_size=1))
    assert result.successful == 3
    assert 7.5 in fake_time.sleeps
    assert server.request_count == 4


def test_422_fails_only_that_conversation_without_retry(fake_time):
    rule = fail_when_content_contains("BAD", Fault.reject("message 0 is not valid UTF-8"))
    conversations = [conversation("good", "I live in Rome."), conversation("bad", "BAD")]
    with AugmentationServer(api_key=API_KEY, faults=rule) as server:
        result, _ = run_seed(server, conversations, fake_time=fake_time)
    good, bad = result.results
    assert good.status == "succeeded"
    assert bad.status == "failed"
    assert "422" in bad.error and "not valid UTF-8" in bad.error
    assert server.request_count == 2 and fake_time.sleeps == []


def test_quota_exhausted_stops_the_run_and_skips_the_rest(fake_time):
    store = DuckDBStore(":memory:")
    quota = lambda n, body: Fault.quota_exceeded() if n >= 3 else None  # noqa: E731
    with AugmentationServer(api_key=API_KEY, faults=quota) as server:
        result, _ = run_seed(server, many(6), store=store, fake_time=fake_time,
                             config=SeedConfig(batch_size=1))
        assert (result.successful, result.failed, result.skipped) == (2, 0, 4)
        assert "quota" in result.stopped_reason.lower()
        assert server.request_count == 3
        skipped = [r for r in result.results if r.status == "skipped"]
        # Skipped is no error: the reason says the run stopped and the next run sends them.
        assert all(r.error is None and r.reason.startswith("run stopped") for r in skipped)
    # Later, with quota again: only the four unsent conversations are sent.
    with AugmentationServer(api_key=API_KEY) as server:
        again, _ = run_seed(server, many(6), store=store, fake_time=fake_time)
        assert (again.successful, again.skipped) == (4, 2)
        assert server.request_count == 4
    runs = store.runs()
    assert set(runs.status) == {"stopped", "completed"}


def test_429s_that_outlast_the_rate_limit_budget_stop_the_run(fake_time):
    with AugmentationServer(api_key=API_KEY,
                            faults=lambda n, b: Fault.rate_limited(None)) as server:
        result, _ = run_seed(server, many(3), fake_time=fake_time,
                             config=SeedConfig(batch_size=1, max_retries=2))
    assert result.failed == 0 and result.skipped == 3
    assert "rate limited" in result.stopped_reason


def test_chunks_are_sent_in_order_with_the_previous_summary(server):
    long = conversation("long", *[f"Message {i}: I love sailing and chess." for i in range(9)])
    result, _ = run_seed(server, [long], config=SeedConfig(max_messages_per_request=4))
    [only] = result.results
    assert only.chunks_processed == 3 and only.status == "succeeded"
    bodies = [r.body for r in server.requests]
    assert [len(b["conversation"]["messages"]) for b in bodies] == [4, 4, 1]
    assert bodies[0]["conversation"]["messages"][0]["content"].startswith("Message 0")
    assert bodies[0]["conversation"]["summary"] is None
    # Each chunk carries the summary the server returned for the one before.
    assert bodies[1]["conversation"]["summary"]
    assert bodies[2]["conversation"]["summary"] != bodies[1]["conversation"]["summary"] or True
    assert only.warnings and "3 requests" in only.warnings[0]


def test_oversized_conversation_fails_with_its_size_when_chunking_is_off(server):
    big = conversation("big", "x" * 500, "y" * 600)
    result, _ = run_seed(server, [big], config=SeedConfig(
        max_chars_per_request=800, chunk_large_conversations=False))
    [only] = result.results
    assert only.status == "failed"
    assert "1,100 characters" in only.error and "800" in only.error
    assert server.request_count == 0


def test_invalid_conversations_fail_and_valid_ones_go_on(server):
    conversations = [conversation("ok", "I live in Paris."), {"id": "empty", "messages": []},
                     {"messages": [{"role": "user", "content": "hi"}]},
                     {"id": "bot", "messages": [{"role": "robot", "content": "hi"}]}]
    result, _ = run_seed(server, conversations)
    statuses = {r.conversation_id: (r.status, r.error) for r in result.results}
    assert statuses["ok"][0] == "succeeded"
    assert "messages is empty" in statuses["empty"][1]
    assert "missing 'id'" in statuses["#2"][1]
    assert "role 'robot'" in statuses["bot"][1]
    assert server.request_count == 1


def test_duplicate_ids_all_fail_before_anything_is_sent(server):
    conversations = [conversation("a", "I live in Paris."), conversation("dup", "one"),
                     conversation("dup", "two")]
    result, _ = run_seed(server, conversations)
    failed = [r for r in result.results if r.status == "failed"]
    assert [r.conversation_id for r in failed] == ["dup", "dup"]
    assert all("positions 1, 2" in r.error for r in failed)
    assert server.request_count == 1


def run_seeds(server, seeds, store):
    async def go():
        backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
        try:
            return await seed_all(seeds, backend=backend, store=store)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def test_an_id_in_two_seeds_of_one_entity_is_sent_once_and_keeps_its_first_content(server):
    # A seed JSON list with two objects for one entity: the same id in both.
    seeds = [SeedData.for_conversations(entity_id="u1", conversations=[
                 conversation("same", "I have a cat."), conversation("a", "I live in Paris.")]),
             SeedData.for_conversations(entity_id="u1", conversations=[
                 conversation("a", "I live in Rome."), conversation("same", "I have a cat.")])]
    store = DuckDBStore(":memory:")
    results = [run_seeds(server, seeds, store) for _ in range(2)]
    assert server.request_count == 2  # "same" and the first "a", in the first run only
    first, again = ([(r.conversation_id, r.status, r.reason) for r in result.results]
                    for result in results)
    repeated = ("duplicate id for entity 'u1', first used at position 1 of the input; ids "
                "must be unique per entity, so this copy (position 2) is not sent")
    same = "already in this run (the input holds it twice, same id and content)"
    assert first == [("same", "succeeded", None), ("a", "succeeded", None),
                     ("a", "failed", repeated), ("same", "skipped", same)]
    assert again == [("same", "skipped", "already seeded"), ("a", "skipped", "already seeded"),
                     ("a", "failed", repeated), ("same", "skipped", same)]
    stored = store.sql("SELECT conversation_id, content FROM messages ORDER BY ALL")
    assert stored.values.tolist() == [["a", "I live in Paris."], ["same", "I have a cat."]]


def test_rerun_skips_succeeded_retries_failed_and_resends_changed_content(fake_time):
    store = DuckDBStore(":memory:")
    rule = fail_when_content_contains("FLAKY", Fault.status(500))
    conversations = [conversation("a", "I live in Paris."), conversation("b", "FLAKY")]
    with AugmentationServer(api_key=API_KEY, faults=rule) as server:
        first, _ = run_seed(server, conversations, store=store, fake_time=fake_time,
                            config=SeedConfig(max_retries=0))
    assert (first.successful, first.failed) == (1, 1)
    with AugmentationServer(api_key=API_KEY) as server:
        second, _ = run_seed(server, conversations, store=store)
        assert (second.successful, second.skipped) == (1, 1)
        assert [r.body["conversation"]["messages"][0]["content"]
                for r in server.requests] == ["FLAKY"]
        changed = [conversation("a", "I live in Berlin now."), conversations[1]]
        third, _ = run_seed(server, changed, store=store)
        assert (third.successful, third.skipped) == (1, 1)
        forced, _ = run_seed(server, conversations, store=store, force=True)
        assert forced.successful == 2
        assert server.request_count == 1 + 1 + 2


def test_ids_leave_only_as_hashes_and_the_key_only_in_the_header(server):
    result, store = run_seed(server, many(1), entity_id="alice@example.com",
                             process_id="support-bot")
    assert result.successful == 1
    [request] = server.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    sent = str(request.body)
    assert "alice@example.com" not in sent and "support-bot" not in sent
    dump = duckdb_text(store)
    assert API_KEY not in dump
    assert "alice@example.com" in dump  # stored locally under the real id


def duckdb_text(store: DuckDBStore) -> str:
    tables = store.sql("select table_name from information_schema.tables").table_name
    return "\n".join(store.sql(f"select * from {t}").to_csv() for t in tables)


def test_cancelled_run_keeps_what_finished_and_resumes(tmp_path):
    path = str(tmp_path / "memori.duckdb")
    conversations = many(30)

    async def cancel_midway(server):
        store = DuckDBStore(path)
        backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
        seeds = [SeedData.for_conversations(entity_id="u", conversations=conversations)]
        done = []
        task = asyncio.create_task(seed_all(
            seeds, backend=backend, store=store, config=SeedConfig(batch_size=3),
            on_progress=lambda n, total, r: done.append(r.conversation_id)))
        while len(done) < 7:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()
        store.close()
        return done

    with AugmentationServer(api_key=API_KEY, latency=0.03) as server:
        finished = asyncio.run(cancel_midway(server))
        sent_first = server.request_count
    conn = duckdb.connect(path)
    saved = {row[0] for row in conn.execute(
        "select conversation_id from seeded_conversations").fetchall()}
    status = conn.execute("select status from runs").fetchone()[0]
    conn.close()
    assert set(finished) <= saved and len(saved) >= 7
    assert status == "interrupted"
    with AugmentationServer(api_key=API_KEY) as server:
        result, _ = run_seed(server, conversations, store=DuckDBStore(path), entity_id="u")
        assert result.skipped == len(saved)
        assert server.request_count == 30 - len(saved)
    assert sent_first + server.request_count >= 30


def test_memori_seed_with_the_local_backend_stores_facts():
    m = Memori(conn=":memory:", backend="local")
    m.attribution(entity_id="user-1", process_id="helpdesk")
    m.config.storage.build()
    data = SeedData.for_conversations(entity_id="user-1", conversations=[
        conversation("c1", "I just bought a Tesla Model 3!", "Congratulations!"),
        conversation("c2", "I live in Lisbon and I just bought a Tesla Model 3.")])
    calls = []
    result = asyncio.run(m.seed(data, on_progress=lambda *args: calls.append(args)))
    assert (result.total, result.successful, result.failed) == (2, 2, 0)
    assert result.success_rate == 100.0 and result.total_triples >= 3
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    frame = result.to_frame()
    assert list(frame.conversation_id) == ["c1", "c2"] and frame.success.all()
    facts = m.facts("user-1")
    tesla = facts[facts.fact.str.contains("Tesla")]
    assert tesla.mention_count.tolist() == [2]
    attributes = m.sql("select * from process_attributes")
    assert set(attributes.process_id) <= {"helpdesk"}


def test_memori_backend_without_key_sends_nothing(monkeypatch, server):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    m = Memori(conn=":memory:", backend="memori", base_url=server.url)
    data = SeedData.for_conversations(entity_id="u", conversations=many(1))
    with pytest.raises(Exception, match="MEMORI_API_KEY") as info:
        asyncio.run(m.seed(data))
    assert "local" in str(info.value)
    assert server.request_count == 0


def test_a_request_without_an_answer_in_time_is_retried_then_fails(fake_time):
    class Silent:
        name, requires_network = "silent", True
        calls = 0

        async def augment(self, request):
            Silent.calls += 1
            await asyncio.sleep(10)

        async def aclose(self):
            pass

    async def go():
        return await seed_all(
            [SeedData.for_conversations(entity_id="u", conversations=many(1))],
            backend=Silent(), store=DuckDBStore(":memory:"), sleep=fake_time.sleep,
            clock=fake_time.clock, jitter=lambda: 0.0,
            config=SeedConfig(request_timeout=0.05, max_retries=1))

    result = asyncio.run(go())
    [only] = result.results
    assert only.status == "failed" and "no answer within 0.05 s" in only.error
    assert Silent.calls == 2


def test_results_finished_in_the_runs_tail_are_written_while_it_is_still_in_flight(
        monkeypatch, tmp_path):
    # Only the tail rule can write before the end: the usual gathering waits a minute.
    monkeypatch.setattr(writer_module, "FLUSH_SECONDS", 60.0)
    store = DuckDBStore(tmp_path / "seed.duckdb")
    written: list[int] = []
    write = store.write
    monkeypatch.setattr(store, "write", lambda run_id, records: (
        written.append(len(records)), write(run_id, records)))
    conversations = [conversation("slow", "slow: I live in Porto."), *many(5)]

    def slow_first(number, body):
        text = body["conversation"]["messages"][0]["content"]
        return Fault.delay(1.0) if text.startswith("slow") else None

    with AugmentationServer(api_key=API_KEY, faults=slow_first) as server:
        result, _ = run_seed(server, conversations, store=store,
                             config=SeedConfig(batch_size=2))
    assert result.successful == 6
    # The five quick ones were written while the slow one was still awaited, not with it.
    assert written == [5, 1]


def test_an_answer_that_repeats_itself_or_cannot_be_stored_is_cleaned():
    """A backend that does not say its answers are clean: what one answer repeats is kept
    once, and what no store can hold is replaced (and said)."""
    class Repeating:
        name, requires_network = "repeating", False

        async def augment(self, request):
            tea = Triple(subject_name="user", subject_type="person", predicate="likes",
                         object_name="tea \ud800", object_type="food")
            return Extraction(triples=(tea, tea), facts=("user likes tea", "user likes tea"),
                              attributes=("food", "food"), summary="about tea")

        async def aclose(self):
            pass

    store = DuckDBStore(":memory:")
    data = SeedData.for_conversations(entity_id="u", process_id="p", conversations=[
        conversation("c1", "I like tea.")])
    result = asyncio.run(seed_all([data], backend=Repeating(), store=store))
    assert result.successful == 1 and result.total_triples == 1
    assert "unstorable characters replaced (in the backend's answer)" in result.results[0].warnings
    assert store.triples().object_name.tolist() == ["tea \ufffd"]
    assert store.facts().fact.tolist() == ["user likes tea"]
    assert store.sql("select attribute, mention_count from process_attributes"
                     ).values.tolist() == [["food", 1]]
