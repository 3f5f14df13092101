"""Tokens and cost: per conversation and per run, in the results, the stores (with the
migration of databases an earlier version built), the summaries, and the estimates the dry
run and chunking_stats make before anything is sent.

Backends that bill by token plug in through the documented ``AugmentationBackend`` protocol
(name, requires_network, async augment, aclose) plus a ``pricing`` attribute; the one here
counts the characters it is sent as its prompt tokens, so every total can be checked by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math

import duckdb
import pandas as pd
import pytest

from helpers import conversation
from memori_nb import Memori, SeedConfig, SeedData
from memori_nb.backends.base import AugmentationRequest
from memori_nb.cli import _dry_run, _report, main
from memori_nb.engine import seed_all
from memori_nb.errors import ConfigurationError, PayloadRejectedError, QuotaExceededError
from memori_nb.models import (Conversation, ConversationResult, Extraction, Message,
                              SeedCounters, Triple, Usage)
from memori_nb.session import describe_result
from memori_nb.pricing import (COMPLETION_TOKENS_PER_REQUEST, Pricing, describe_usage,
                               estimate_requests, estimate_tokens)
from memori_nb.progress import postfix_for
from memori_nb.stats import ESTIMATE_COLUMNS, STATS_COLUMNS, chunking_stats, stats_totals
from memori_nb.stores import DuckDBStore
from memori_nb.stores.base import ResultRecord
from memori_nb.stores.journal import Journal, replay

PRICES = Pricing(prompt_per_million=2.0, completion_per_million=8.0)
COMPLETION_PER_TRIPLE = 7


class TokenBackend:
    """A backend that bills by token: one ``user said <word>`` triple per user message;
    prompt tokens = characters sent + ``overhead``, completion tokens = 7 per triple.

    ``fail`` maps (conversation id, chunk index) to an exception raised the first time that
    chunk is sent; ``report`` decides per request whether usage is reported at all."""

    name = "tokens"
    requires_network = True

    def __init__(self, pricing: Pricing | None = PRICES, *, overhead: int = 100,
                 fail: dict | None = None, report=lambda request: True) -> None:
        self.pricing = pricing
        self.overhead = overhead
        self.fail = dict(fail or {})
        self.report = report
        self.sent: list[tuple[str, int]] = []

    def prompt_overhead_characters(self) -> int:
        return self.overhead

    async def augment(self, request: AugmentationRequest) -> Extraction:
        error = self.fail.pop((request.conversation_id, request.chunk_index), None)
        if error is not None:
            raise error
        self.sent.append((request.conversation_id, request.chunk_index))
        triples = tuple(Triple(subject_name="user", subject_type="person", predicate="said",
                               object_name=m.content.split()[0], object_type="word")
                        for m in request.messages if m.role == "user")
        usage = Usage(prompt_tokens=sum(len(m.content) for m in request.messages)
                      + self.overhead,
                      completion_tokens=COMPLETION_PER_TRIPLE * len(triples))
        return Extraction(triples=triples, summary=f"chunk {request.chunk_index}",
                          usage=usage if self.report(request) else None)

    async def aclose(self) -> None:
        pass


def usage_of(backend: TokenBackend, *texts: str, users: int) -> Usage:
    """What one request of these message texts reports."""
    return Usage(prompt_tokens=sum(map(len, texts)) + backend.overhead,
                 completion_tokens=COMPLETION_PER_TRIPLE * users)


def seed(backend, conversations, store=None, config=None, entity="u1", **kwargs):
    store = store if store is not None else DuckDBStore(":memory:")
    data = SeedData.for_conversations(entity_id=entity, conversations=conversations)
    result = asyncio.run(seed_all([data], backend=backend, store=store, config=config,
                                  **kwargs))
    return result, store


# --- pricing ---------------------------------------------------------------------------------

def test_pricing_costs_tokens_at_prices_per_million():
    assert PRICES.cost(Usage(prompt_tokens=1_000_000, completion_tokens=0)) == 2.0
    assert PRICES.cost(Usage(prompt_tokens=12_345, completion_tokens=2_100)) == pytest.approx(
        (12_345 * 2 + 2_100 * 8) / 1e6)
    assert Pricing(0.15, 0.60).cost(Usage(prompt_tokens=10_000, completion_tokens=2_000)) \
        == 0.0027
    assert Pricing(0, 0).cost(Usage(prompt_tokens=5, completion_tokens=5)) == 0.0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "2", None, True])
def test_pricing_refuses_what_is_not_a_price(bad):
    with pytest.raises(ConfigurationError, match="prompt_per_million"):
        Pricing(bad, 1.0)
    with pytest.raises(ConfigurationError, match="completion_per_million"):
        Pricing(1.0, bad)


def test_estimate_tokens_is_characters_over_four_rounded_up():
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, 8, 9, 400_001)] == [
        0, 1, 1, 2, 2, 3, 100_001]


def test_estimate_requests_adds_the_overhead_per_request_and_an_allowance():
    estimate = estimate_requests(1_000, 3, overhead_characters=200, pricing=PRICES)
    assert estimate.prompt_tokens == math.ceil((1_000 + 3 * 200) / 4)
    assert estimate.completion_tokens == 3 * COMPLETION_TOKENS_PER_REQUEST
    assert estimate.cost == pytest.approx((400 * 2 + 1_200 * 8) / 1e6)
    assert estimate_requests(1_000, 3).cost is None


def test_describe_usage_reads_like_a_sentence_and_is_empty_without_tokens():
    assert describe_usage(12_345, 2_100, 0.0123) == (
        "12,345 prompt + 2,100 completion tokens, $0.0123")
    assert describe_usage(10, 0) == "10 prompt + 0 completion tokens"
    assert describe_usage(None, None, None) == ""


# --- the engine ------------------------------------------------------------------------------

def test_tokens_add_up_over_a_conversations_chunks_and_over_the_run():
    backend = TokenBackend()
    texts = ("alpha one", "reply", "beta two", "reply again", "gamma")
    result, store = seed(backend, [conversation("big", *texts), conversation("small", "delta")],
                         config=SeedConfig(max_messages_per_request=2))
    assert (result.successful, result.failed) == (2, 0)
    by_id = {r.conversation_id: r for r in result.results}
    chunks = [usage_of(backend, *texts[i:i + 2], users=1) for i in (0, 2, 4)]
    big = chunks[0] + chunks[1] + chunks[2]
    assert by_id["big"].chunks_processed == 3
    assert (by_id["big"].prompt_tokens, by_id["big"].completion_tokens) == (
        big.prompt_tokens, big.completion_tokens)
    assert by_id["big"].cost == PRICES.cost(big)
    small = usage_of(backend, "delta", users=1)
    run = big + small
    assert (result.prompt_tokens, result.completion_tokens) == (
        run.prompt_tokens, run.completion_tokens)
    assert result.cost == pytest.approx(PRICES.cost(big) + PRICES.cost(small))
    summary = result.summary_dict()
    assert summary["prompt_tokens"] == run.prompt_tokens
    assert summary["cost"] == pytest.approx(result.cost)
    frame = result.to_frame().set_index("conversation_id")
    assert frame.loc["small", "prompt_tokens"] == small.prompt_tokens
    # The store has them per conversation and for the run.
    rows = store.results(result.run_id).set_index("conversation_id")
    assert rows.loc["big", "prompt_tokens"] == big.prompt_tokens
    assert rows.loc["big", "completion_tokens"] == big.completion_tokens
    assert rows.loc["big", "cost"] == pytest.approx(PRICES.cost(big))
    runs = store.runs().set_index("run_id")
    assert runs.loc[result.run_id, "prompt_tokens"] == run.prompt_tokens
    assert runs.loc[result.run_id, "completion_tokens"] == run.completion_tokens
    assert runs.loc[result.run_id, "cost"] == pytest.approx(result.cost)


def test_a_backend_without_prices_reports_tokens_but_no_cost():
    result, store = seed(TokenBackend(pricing=None), [conversation("c1", "hello there")])
    assert result.prompt_tokens == len("hello there") + 100
    assert result.cost is None and result.results[0].cost is None
    assert "cost" not in result.summary_dict()
    run = store.runs().iloc[0]
    assert run["prompt_tokens"] == result.prompt_tokens and pd.isna(run["cost"])


def test_requests_without_usage_are_not_counted_and_a_run_without_any_shows_none():
    # Only the first chunk reports usage: the conversation counts that one.
    backend = TokenBackend(report=lambda request: request.chunk_index == 0)
    result, _ = seed(backend, [conversation("c1", "alpha", "x", "beta", "y")],
                     config=SeedConfig(max_messages_per_request=2))
    assert result.prompt_tokens == usage_of(backend, "alpha", "x", users=1).prompt_tokens
    silent, store = seed(TokenBackend(report=lambda request: False),
                         [conversation("c1", "alpha")])
    assert (silent.prompt_tokens, silent.completion_tokens, silent.cost) == (None, None, None)
    assert silent.results[0].prompt_tokens is None
    assert {"prompt_tokens", "completion_tokens", "cost"}.isdisjoint(silent.summary_dict())
    assert store.runs()[["prompt_tokens", "completion_tokens", "cost"]].isna().all().all()


def test_the_local_backend_runs_as_before_with_no_tokens():
    m = Memori(conn=":memory:", backend="local")
    result = asyncio.run(m.seed(SeedData.for_conversations(entity_id="u1", conversations=[
        conversation("c1", "I live in Lisbon.")])))
    assert result.successful == 1
    assert (result.prompt_tokens, result.completion_tokens, result.cost) == (None, None, None)
    assert set(result.summary_dict()) == {"run_id", "total", "successful", "failed", "skipped",
                                          "total_triples", "duration_ms"}
    assert "tokens" not in describe_result(result)
    assert m.runs()[["prompt_tokens", "cost"]].isna().all().all()
    m.close()


def test_chunks_paid_before_a_failure_or_a_stop_are_counted_and_not_again_on_resume():
    texts = ("alpha", "x", "beta", "y", "gamma", "z")
    config = SeedConfig(max_messages_per_request=2, max_retries=0)
    chunks = [("alpha", "x"), ("beta", "y"), ("gamma", "z")]
    # The quota runs out at the second chunk: the first was billed in this run.
    backend = TokenBackend(fail={("c1", 1): QuotaExceededError("quota exhausted",
                                                               status_code=429)})
    first, store = seed(backend, [conversation("c1", *texts)], config=config)
    assert first.skipped == 1 and first.stopped_reason
    paid = usage_of(backend, *chunks[0], users=1)
    assert (first.results[0].prompt_tokens, first.prompt_tokens) == (paid.prompt_tokens,) * 2
    assert first.cost == PRICES.cost(paid)
    # The next run resumes after chunk 1 and counts only the two chunks it sends.
    second, _ = seed(backend, [conversation("c1", *texts)], store=store, config=config)
    assert second.successful == 1 and backend.sent == [("c1", 0), ("c1", 1), ("c1", 2)]
    rest = usage_of(backend, *chunks[1], users=1) + usage_of(backend, *chunks[2], users=1)
    assert (second.prompt_tokens, second.completion_tokens) == (
        rest.prompt_tokens, rest.completion_tokens)
    runs = store.runs().set_index("run_id")
    assert runs.loc[first.run_id, "prompt_tokens"] == paid.prompt_tokens
    assert runs.loc[second.run_id, "prompt_tokens"] == rest.prompt_tokens
    # A conversation that fails for good after a chunk still counts the chunk it paid for.
    backend = TokenBackend(fail={("c2", 1): PayloadRejectedError("bad", status_code=422)})
    failed, _ = seed(backend, [conversation("c2", *texts)], config=config)
    assert failed.failed == 1
    assert failed.results[0].prompt_tokens == usage_of(backend, *chunks[0], users=1).prompt_tokens


def test_live_counters_and_summaries_show_tokens_only_when_there_are_some():
    counters = SeedCounters()
    assert "tokens" not in postfix_for(counters)
    result, _ = seed(TokenBackend(), [conversation("c1", "hello there")])
    counters.count(result.results[0])
    postfix = postfix_for(counters)
    assert postfix["tokens"] == result.prompt_tokens + result.completion_tokens
    assert postfix["cost"] == f"${result.cost:,.4f}"
    usage = describe_usage(result.prompt_tokens, result.completion_tokens, result.cost)
    assert usage in describe_result(result)
    from memori_nb.panel import describe_counters
    assert usage in describe_counters(counters)
    assert "tokens" not in describe_counters(SeedCounters())


def test_cli_summary_shows_tokens_and_cost_and_json_has_them():
    result, store = seed(TokenBackend(), [conversation("c1", "hello there")])
    args = argparse.Namespace(db="memori.duckdb", json=True)
    out, err = io.StringIO(), io.StringIO()
    _report(args, result, store.failures(result.run_id), store.warnings(result.run_id), out,
            err)
    usage = describe_usage(result.prompt_tokens, result.completion_tokens, result.cost)
    assert usage in err.getvalue()
    document = json.loads(out.getvalue())
    assert (document["prompt_tokens"], document["completion_tokens"]) == (
        result.prompt_tokens, result.completion_tokens)
    assert document["cost"] == pytest.approx(result.cost)


# --- estimates before anything is sent -------------------------------------------------------

def seeds_for_estimates() -> list[SeedData]:
    return [SeedData.for_conversations(entity_id="a", conversations=[
                conversation("c1", "x" * 40, "y" * 20), conversation("c2", "z" * 10, "w" * 30,
                                                                     "v" * 5)]),
            SeedData.for_conversations(entity_id="b", conversations=[
                conversation("c1", "q" * 7), {"id": "bad", "messages": []}])]


def test_chunking_stats_estimates_tokens_and_cost_for_a_backend_that_bills_by_token():
    config = SeedConfig(max_messages_per_request=2)
    backend = TokenBackend(overhead=100)
    stats = chunking_stats(seeds_for_estimates(), config, backend=backend)
    assert list(stats.columns) == [*STATS_COLUMNS, *ESTIMATE_COLUMNS]
    rows = stats.set_index(["entity_id", "conversation_id"])
    # a/c2: 45 characters in 2 requests (3 messages, 2 per request), 100 more per request.
    assert rows.loc[("a", "c2"), "estimated_prompt_tokens"] == math.ceil((45 + 200) / 4)
    assert rows.loc[("a", "c2"), "estimated_completion_tokens"] == 2 * COMPLETION_TOKENS_PER_REQUEST
    assert rows.loc[("a", "c2"), "estimated_cost"] == pytest.approx(
        PRICES.cost(Usage(prompt_tokens=62, completion_tokens=800)))
    # Prices passed in win over the backend's.
    cheap = Pricing(1.0, 1.0)
    priced = chunking_stats(seeds_for_estimates(), config, backend=backend, pricing=cheap)
    assert priced.loc[0, "estimated_cost"] == pytest.approx(
        (math.ceil(160 / 4) + COMPLETION_TOKENS_PER_REQUEST) / 1e6)
    totals = stats_totals(stats).set_index("entity_id")
    assert totals.loc["a", "estimated_prompt_tokens"] == math.ceil(160 / 4) + 62
    # The invalid conversation of b counts nothing.
    assert totals.loc["b", "estimated_prompt_tokens"] == math.ceil(107 / 4)
    overall = stats_totals(stats, by=None).iloc[0]
    assert overall["estimated_completion_tokens"] == 4 * COMPLETION_TOKENS_PER_REQUEST
    assert overall["estimated_cost"] == pytest.approx(stats["estimated_cost"].sum())


def test_chunking_stats_without_a_token_backend_or_prices_stays_as_it_was():
    stats = chunking_stats(seeds_for_estimates())
    assert list(stats.columns) == list(STATS_COLUMNS)
    assert not set(ESTIMATE_COLUMNS) & set(stats_totals(stats).columns)
    # Prices alone estimate with no overhead; a backend without prices gives NaN cost.
    priced = chunking_stats(seeds_for_estimates(), pricing=PRICES)
    assert priced.loc[0, "estimated_prompt_tokens"] == math.ceil(60 / 4)
    unpriced = chunking_stats(seeds_for_estimates(), backend=TokenBackend(pricing=None))
    assert unpriced["estimated_cost"].isna().all()
    assert pd.isna(stats_totals(unpriced, by=None).iloc[0]["estimated_cost"])
    with pytest.raises(ConfigurationError, match="pricing"):
        chunking_stats(seeds_for_estimates(), pricing=(1, 2))


def test_dry_run_prints_the_token_and_cost_estimate_for_a_token_backend():
    config = SeedConfig(max_messages_per_request=2)
    args = argparse.Namespace(file="chats.json", json=False)
    out = io.StringIO()
    _dry_run(args, seeds_for_estimates(), config, out, backend=TokenBackend(overhead=100))
    # 60 + 45 + 7 valid characters in 1 + 2 + 1 requests, 100 characters of overhead each.
    expected = estimate_requests(112, 4, overhead_characters=100, pricing=PRICES)
    text = out.getvalue()
    assert f"prompt tokens  about {expected.prompt_tokens:,}" in text
    assert f"completion     about {expected.completion_tokens:,} tokens" in text
    assert f"cost           about ${expected.cost:,.4f}" in text
    out = io.StringIO()
    _dry_run(argparse.Namespace(file="chats.json", json=True), seeds_for_estimates(), config,
             out, backend=TokenBackend(overhead=100))
    document = json.loads(out.getvalue())
    assert document["estimated_prompt_tokens"] == expected.prompt_tokens
    assert document["estimated_cost"] == pytest.approx(expected.cost)


def test_dry_run_of_the_named_backends_says_nothing_about_tokens(tmp_path):
    path = tmp_path / "chats.json"
    path.write_text(json.dumps({"entity_id": "u1", "conversations": [
        conversation("c1", "I live in Lisbon.")]}))
    for extra in ([], ["--backend", "local"]):
        out, err = io.StringIO(), io.StringIO()
        assert main(["seed", str(path), "--dry-run", *extra], stdout=out, stderr=err) == 0
        assert "prompt tokens" not in out.getvalue() and "cost" not in out.getvalue()
        out = io.StringIO()
        main(["seed", str(path), "--dry-run", "--json", *extra], stdout=out, stderr=err)
        assert "estimated_prompt_tokens" not in json.loads(out.getvalue())


def test_panel_dry_run_with_a_token_backend_shows_the_estimate():
    pytest.importorskip("ipywidgets")
    from memori_nb.panel import SeedPanel

    panel = SeedPanel(seeds_for_estimates(), db=":memory:", backend=TokenBackend())
    stats = panel.dry_run()
    assert "estimated_cost" in stats.columns
    row = stats_totals(stats, by=None).iloc[0]
    # The plan estimates the conversations to send as the CLI does (estimate_requests over
    # their totals): within a token per conversation of the per-row sums.
    plan = panel.plan
    assert abs(plan.prompt_tokens - row["estimated_prompt_tokens"]) <= plan.to_send
    assert f"about {plan.prompt_tokens:,} prompt" in panel.stats_html.value
    assert f"${plan.cost:,.4f}" in panel.stats_html.value
    local = SeedPanel(seeds_for_estimates(), db=":memory:", backend="local")
    assert "estimated_cost" not in local.dry_run().columns
    assert "prompt +" not in local.stats_html.value


# --- databases an earlier version built -------------------------------------------------------

# The DuckDB ledger tables as the previous version created them (main before issue 11).
OLD_DUCKDB = """
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    backend VARCHAR, force BOOLEAN, config JSON, total BIGINT, successful BIGINT,
    failed BIGINT, skipped BIGINT, retries BIGINT, total_triples BIGINT, duration_ms DOUBLE,
    stopped_reason VARCHAR);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS host VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid BIGINT;
CREATE TABLE conversation_results (
    run_id VARCHAR, entity_id VARCHAR, process_id VARCHAR, conversation_id VARCHAR,
    content_hash VARCHAR, status VARCHAR, error VARCHAR, chunks_processed INTEGER,
    triples_count INTEGER, duration_ms DOUBLE, warnings VARCHAR[], summary VARCHAR,
    finished_at TIMESTAMP);
INSERT INTO runs (run_id, started_at, status, backend, total) VALUES
    ('old-run', TIMESTAMP '2026-01-01 10:00:00', 'completed', 'memori', 1);
INSERT INTO conversation_results VALUES ('old-run', 'u1', NULL, 'old', 'h', 'succeeded', NULL,
    1, 2, 5.0, [], 'an old summary', TIMESTAMP '2026-01-01 10:00:01');
"""


def test_a_duckdb_database_of_the_previous_version_gains_the_token_columns(tmp_path):
    path = str(tmp_path / "old.duckdb")
    with duckdb.connect(path) as conn:
        conn.execute(OLD_DUCKDB)
    store = DuckDBStore(path)
    result, _ = seed(TokenBackend(), [conversation("c1", "hello there")], store=store)
    assert result.successful == 1
    rows = store.results(result.run_id)
    assert rows.loc[0, "prompt_tokens"] == result.prompt_tokens
    assert rows.loc[0, "cost"] == pytest.approx(result.cost)
    assert rows.loc[0, "summary"] == "chunk 0"  # every value in its own column
    old = store.results("old-run").iloc[0]
    assert old["summary"] == "an old summary" and pd.isna(old["prompt_tokens"])
    runs = store.runs().set_index("run_id")
    assert runs.loc[result.run_id, "completion_tokens"] == result.completion_tokens
    assert pd.isna(runs.loc["old-run", "cost"])
    store.close()
    again = DuckDBStore(path)
    again.build()  # migrating twice changes nothing
    assert list(again.runs().columns).count("cost") == 1
    again.close()


# The SQL store's ledger tables as the previous version created them (SQLite types), before
# host and pid were added too.
OLD_SQLITE = [
    """CREATE TABLE memori_nb_runs (
    run_id TEXT PRIMARY KEY, started_at TEXT, finished_at TEXT, status TEXT,
    backend TEXT, force INTEGER, config TEXT, total INTEGER, successful INTEGER, failed INTEGER,
    skipped INTEGER, retries INTEGER, total_triples INTEGER, duration_ms REAL,
    stopped_reason TEXT)""",
    """CREATE TABLE memori_nb_conversation_results (
    run_id TEXT, entity_id TEXT, process_id TEXT, conversation_id TEXT, content_hash TEXT,
    status TEXT, error TEXT, chunks_processed INTEGER, triples_count INTEGER,
    duration_ms REAL, warnings TEXT, summary TEXT, finished_at TEXT)""",
    """INSERT INTO memori_nb_runs (run_id, started_at, status, backend, total) VALUES
    ('old-run', '2026-01-01 10:00:00.000000', 'completed', 'memori', 1)""",
    """INSERT INTO memori_nb_conversation_results VALUES ('old-run', 'u1', NULL, 'old', 'h',
    'succeeded', NULL, 1, 2, 5.0, '[]', 'an old summary', '2026-01-01 10:00:01.000000')""",
]
OLD_POSTGRES = [statement.replace("INTEGER", "BIGINT").replace("REAL", "DOUBLE PRECISION")
                .replace("started_at TEXT, finished_at TEXT",
                         "started_at TIMESTAMP, finished_at TIMESTAMP")
                .replace("finished_at TEXT)", "finished_at TIMESTAMP)")
                .replace("force BIGINT", "force BOOLEAN")
                for statement in OLD_SQLITE]


@pytest.fixture(params=["sqlite", "postgresql"])
def old_sql_database(request, tmp_path):
    """A SQL database holding the previous version's ledger tables, and a run in them."""
    sa = pytest.importorskip("sqlalchemy")
    pytest.importorskip("onnxruntime")
    if request.param == "sqlite":
        url, statements = f"sqlite:///{tmp_path / 'old.db'}", OLD_SQLITE
    else:
        url, statements = request.getfixturevalue("pg_url"), OLD_POSTGRES
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()
    return url


def test_a_sql_database_of_the_previous_version_gains_the_token_columns(old_sql_database):
    from memori_nb.embeddings import Embedder
    from memori_nb.stores import SqlStore

    store = SqlStore(old_sql_database, embedder=Embedder())
    result, _ = seed(TokenBackend(), [conversation("c1", "hello there")], store=store)
    assert result.successful == 1
    rows = store.results(result.run_id)
    assert rows.loc[0, "prompt_tokens"] == result.prompt_tokens
    assert rows.loc[0, "cost"] == pytest.approx(result.cost)
    assert rows.loc[0, "summary"] == "chunk 0" and rows.loc[0, "warnings"] == []
    old = store.results("old-run").iloc[0]
    assert old["summary"] == "an old summary" and pd.isna(old["prompt_tokens"])
    runs = store.runs().set_index("run_id")
    assert runs.loc[result.run_id, "prompt_tokens"] == result.prompt_tokens
    assert runs.loc[result.run_id, "completion_tokens"] == result.completion_tokens
    assert runs.loc[result.run_id, "cost"] == pytest.approx(result.cost)
    assert pd.isna(runs.loc["old-run", "cost"])
    store.build()  # migrating twice changes nothing
    store.close()


def test_a_dead_runs_journal_keeps_each_conversations_tokens(tmp_path):
    store = DuckDBStore(str(tmp_path / "memori.duckdb"))
    store.build()
    store.start_run("dead-run", backend="tokens", config=SeedConfig(), force=False)
    result = ConversationResult(conversation_id="c1", entity_id="u1", status="succeeded",
                                triples_count=0, prompt_tokens=1_234, completion_tokens=56,
                                cost=0.0029)
    conv = Conversation(id="c1", messages=(Message(role="user", content="hello"),))
    journal = Journal(store.journal_dir(), "dead-run")
    journal.finished(ResultRecord(result, conv.content_hash(), None, Extraction(), conv))
    journal.close(delete=False)  # the process died before the store had it
    assert replay(store.journal_dir(), store) == 1
    row = store.results("dead-run").iloc[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1_234, 56)
    assert row["cost"] == pytest.approx(0.0029)
    store.close()
