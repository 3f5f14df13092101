"""Failures first and readable: short reasons beside errors, failures listed first, bars that
turn amber or red, summaries with singulars, and the HTML display of a run."""

from __future__ import annotations

import asyncio
import io
import json

import duckdb
import pandas as pd
import pytest

from helpers import API_KEY, conversation
from memori_nb import Memori, SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.cli import main
from memori_nb.engine import seed_all
from memori_nb.models import (ALREADY_SEEDED, ConversationResult, SeedCounters, SeedResult,
                              short_reason)
from memori_nb.panel import SeedPanel, WidgetProgress
from memori_nb.progress import TqdmProgress
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, Fault, fail_when_content_contains
from memori_nb.wording import describe_seed_result, plural

ROBOT = {"id": "bad", "messages": [{"role": "robot", "content": "beep"}]}
EMPTY = {"id": "empty", "messages": []}


def seed(store, conversations, **kwargs) -> SeedResult:
    m = Memori(conn=store, backend="local")
    try:
        return asyncio.run(m.seed(SeedData.for_conversations(
            entity_id="u1", conversations=conversations), **kwargs))
    finally:
        m.close()


# --- reasons -------------------------------------------------------------------------------

def test_short_reason_drops_the_conversations_name_and_puts_a_lone_location_last():
    assert short_reason("conversation 'cust-ben-007': row 551: role is missing",
                        "cust-ben-007") == "role is missing (row 551)"
    assert short_reason("conversation 'c1': messages is empty", "c1") == "messages is empty"
    assert short_reason("conversation 'c3' is too large for one request: 5 messages",
                        "c3") == "too large for one request: 5 messages"
    # Several problems keep their own locations; an error naming no conversation stays whole.
    several = "conversation 'c1': row 2: role is missing; row 3: role is missing"
    assert short_reason(several, "c1") == "row 2: role is missing; row 3: role is missing"
    assert short_reason("HTTP 422: rejected", "c1") == "HTTP 422: rejected"


def test_a_failed_conversation_has_its_error_and_a_short_reason(tmp_path):
    store = str(tmp_path / "m.duckdb")
    result = seed(store, [conversation("c1", "I live in Oslo."), ROBOT, EMPTY])
    by_id = {r.conversation_id: r for r in result.results}
    bad = by_id["bad"]
    assert bad.status == "failed" and bad.error.startswith("conversation 'bad': ")
    assert bad.reason.startswith("role 'robot' is not one of") and "'bad'" not in bad.reason
    assert by_id["empty"].reason == "messages is empty"
    assert by_id["c1"].reason is None and by_id["c1"].error is None


def test_skipped_conversations_say_why_in_reason_not_in_error(tmp_path):
    store = str(tmp_path / "m.duckdb")
    seed(store, [conversation("c1", "I live in Oslo.")])
    # c2 twice: in two SeedData of one entity (twice in one list is a duplicate id).
    m = Memori(conn=store, backend="local")
    try:
        again = asyncio.run(m.seed([
            SeedData.for_conversations(entity_id="u1", conversations=[
                conversation("c1", "I live in Oslo."), conversation("c2", "Hi.")]),
            SeedData.for_conversations(entity_id="u1", conversations=[
                conversation("c2", "Hi.")])]))
    finally:
        m.close()
    skipped = [(r.conversation_id, r.reason, r.error) for r in again.results
               if r.status == "skipped"]
    assert skipped == [("c1", "already seeded", None),
                       ("c2", "already in this run (the input holds it twice, same id and "
                              "content)", None)]


def test_conversations_the_run_stopped_before_say_so():
    quota = lambda n, body: Fault.quota_exceeded() if n >= 2 else None  # noqa: E731
    with AugmentationServer(api_key=API_KEY, faults=quota) as server:
        result = asyncio.run(_seed_cloud(server, [conversation(f"c{n}", f"I am {n}.")
                                                  for n in range(5)]))
    assert result.stopped_reason and result.skipped == 4
    # Each says why the run stopped, in short (the run's stopped_reason says it in full).
    reasons = {r.reason for r in result.results if r.status == "skipped"}
    assert reasons <= {"run stopped (quota exhausted) before it was sent",
                       "run stopped (quota exhausted) before it finished; the next run "
                       "sends it"}
    assert all(r.error is None for r in result.results if r.status == "skipped")
    # The summary counts them as not sent: "Seeded" only leads when something was.
    assert str(result).startswith("Seeded 5 conversations in ")
    assert ": 1 succeeded, 4 not sent; 0 triples. The run stopped early: quota exhausted (HTTP " \
           "429: " in str(result)


def test_a_run_the_quota_stops_at_once_seeded_nothing_and_says_so():
    with AugmentationServer(api_key=API_KEY, faults=lambda n, body: Fault.quota_exceeded()) \
            as server:
        result = asyncio.run(_seed_cloud(server, [conversation(f"c{n}", f"I am {n}.")
                                                  for n in range(3)]))
    text = str(result)
    assert text.startswith("3 conversations in ") and "Seeded" not in text
    assert ": 0 succeeded, 3 not sent. The run stopped early: quota exhausted (HTTP 429: " in text
    assert "3 (not sent)" in result._repr_html_()


def test_a_refused_key_is_the_cause_in_the_reasons_of_what_was_not_sent():
    with AugmentationServer(api_key=API_KEY) as server:
        backend = MemoriBackend(api_key="not-the-key", base_url=server.url)

        async def go():
            try:
                return await seed_all([SeedData.for_conversations(
                    entity_id="u1", conversations=[conversation("c1", "Hi."),
                                                   conversation("c2", "Yo.")])],
                    backend=backend, store=DuckDBStore(":memory:"),
                    config=SeedConfig(batch_size=1, max_retries=0), jitter=lambda: 0.0)
            finally:
                await backend.aclose()

        result = asyncio.run(go())
    assert {r.reason.split(" before ")[0] for r in result.results} == {
        "run stopped (API key refused)"}
    assert str(result).startswith("2 conversations in ") and ": 0 succeeded, 2 not sent. " \
        "The run stopped early: the API key was refused" in str(result)


async def _seed_cloud(server, conversations, progress=None) -> SeedResult:
    backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
    try:
        return await seed_all([SeedData.for_conversations(entity_id="u1",
                                                          conversations=conversations)],
                              backend=backend, store=DuckDBStore(":memory:"),
                              config=SeedConfig(batch_size=1, max_retries=0),
                              progress=progress, jitter=lambda: 0.0)
    finally:
        await backend.aclose()


# --- stores: the reason column, failures first -----------------------------------------------

def _stores(request, tmp_path):
    kind = request.param
    if kind == "duckdb":
        return str(tmp_path / "m.duckdb")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("onnxruntime")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=["duckdb", "sqlite", "postgresql"])
def conn(request, tmp_path):
    return _stores(request, tmp_path)


def test_results_list_failed_then_succeeded_then_skipped_with_reasons(conn):
    seed(conn, [conversation("c1", "I live in Oslo.")])
    seed(conn, [conversation("c1", "I live in Oslo."), ROBOT, conversation("c2", "Hi.")])
    m = Memori(conn=conn, backend="local")
    try:
        rows = m.results()
        assert rows[["conversation_id", "status", "reason"]].values.tolist()[:1] == [
            ["bad", "failed", rows.reason[0]]]
        assert list(rows.status) == ["failed", "succeeded", "skipped"]
        assert rows.reason[0].startswith("role 'robot'") and rows.error[0].startswith(
            "conversation 'bad'")
        assert pd.isna(rows.reason[1]) and rows.reason[2] == "already seeded"
        assert pd.isna(rows.error[2])
        failures = m.failures()
        assert failures.conversation_id.tolist() == ["bad"]
        assert failures.reason[0] == rows.reason[0]
    finally:
        m.close()


@pytest.fixture(params=["duckdb", "sqlite", "postgresql"])
def conn_without_reason(request, tmp_path):
    """A database as the previous version left it: results, no reason column."""
    conn = _stores(request, tmp_path)
    seed(conn, [ROBOT])
    table = "conversation_results" if request.param == "duckdb" else \
        "memori_nb_conversation_results"
    if request.param == "duckdb":
        with duckdb.connect(conn) as db:
            db.execute(f"ALTER TABLE {table} DROP COLUMN reason")
    else:
        import sqlalchemy as sa
        engine = sa.create_engine(conn)
        with engine.begin() as db:
            db.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN reason")
        engine.dispose()
    return conn


def test_a_database_without_the_reason_column_gains_it_and_keeps_its_rows(
        conn_without_reason):
    conn = conn_without_reason
    m = Memori(conn=conn, backend="local")
    try:
        old_run = m.results()
        assert "reason" not in old_run.columns  # not built yet: reading changes nothing
    finally:
        m.close()
    result = seed(conn, [ROBOT, conversation("c1", "I live in Oslo.")])
    m = Memori(conn=conn, backend="local")
    try:
        m.config.storage.build()  # building again changes nothing
        runs = m.runs()
        old = m.results(runs.run_id.iloc[-1])
        assert old.status.tolist() == ["failed"] and pd.isna(old.reason[0])
        assert old.error[0].startswith("conversation 'bad'")
        new = m.results(result.run_id)
        assert new.status.tolist() == ["failed", "succeeded"]
        assert new.reason[0].startswith("role 'robot'")
        assert list(new.columns).count("reason") == 1
    finally:
        m.close()


# --- bars ----------------------------------------------------------------------------------

def counters(*, total=3, ok=0, failed=0, skipped=0, stopped=None) -> SeedCounters:
    return SeedCounters(total=total, processed=ok + failed + skipped, successful=ok,
                        failed=failed, skipped=skipped, stopped_reason=stopped)


@pytest.mark.parametrize("state, outcome", [
    (dict(ok=3), "success"),
    (dict(ok=1, skipped=2), "success"),
    (dict(ok=2, failed=1), "warning"),
    (dict(ok=1), "warning"),                      # interrupted: not all were processed
    (dict(failed=3), "danger"),
    (dict(failed=1, skipped=2), "danger"),        # everything sent failed
    (dict(ok=1, skipped=2, stopped="quota exhausted"), "danger"),
])
def test_a_finished_runs_outcome(state, outcome):
    assert counters(**state).outcome == outcome


def test_the_terminal_bar_is_green_yellow_or_red():
    def close(state):
        sink = TqdmProgress(file=io.StringIO(), notebook=False)
        sink.open(3)
        sink.close(counters(**state))
        return sink.bar.colour

    assert close(dict(ok=3)) == "green"
    assert close(dict(ok=2, failed=1)) == "yellow"
    assert close(dict(failed=3)) == "red"


def test_the_notebook_bar_is_success_warning_or_danger():
    pytest.importorskip("ipywidgets")

    def close(state):
        sink = TqdmProgress(notebook=True)
        sink.open(3)
        for _ in range(state.get("ok", 0) + state.get("failed", 0)):
            sink.bar.update(1)
        sink.close(counters(**state))
        return sink.bar.container.children[1].bar_style

    assert close(dict(ok=3)) == "success"
    assert close(dict(ok=2, failed=1)) == "warning"  # tqdm alone would say success
    assert close(dict(ok=1)) == "warning"            # interrupted; tqdm alone: danger
    assert close(dict(failed=3)) == "danger"


def test_a_real_run_with_one_failure_ends_amber_and_a_failed_one_red():
    bar = lambda: TqdmProgress(file=io.StringIO(), notebook=False)  # noqa: E731
    with AugmentationServer(api_key=API_KEY, faults=fail_when_content_contains(
            "refuse", Fault.reject("no"))) as server:
        some = bar()
        asyncio.run(_seed_cloud(server, [conversation("c1", "I live in Oslo."),
                                         conversation("c2", "refuse me")], progress=some))
        everything = bar()
        asyncio.run(_seed_cloud(server, [conversation("c3", "refuse me too")],
                                progress=everything))
    assert some.bar.colour == "yellow" and everything.bar.colour == "red"


def test_the_panels_bar_follows_the_outcome():
    from types import SimpleNamespace

    bar = SimpleNamespace(value=0, max=0, bar_style="")
    sink = WidgetProgress(bar, SimpleNamespace(value=""))
    for state, style in [(dict(ok=3), "success"), (dict(ok=2, failed=1), "warning"),
                         (dict(failed=3), "danger")]:
        sink.start(counters())
        sink.close(counters(**state))
        assert bar.bar_style == style


# --- words ---------------------------------------------------------------------------------

def result(**fields) -> SeedResult:
    base = dict(run_id="r1", total=0, successful=0, failed=0, skipped=0, total_triples=0,
                duration_ms=200)
    return SeedResult(**{**base, **fields})


def test_summaries_use_singulars_and_say_when_nothing_was_sent():
    assert plural(1, "conversation") == "1 conversation"
    assert plural(2, "triple") == "2 triples"
    assert str(result(total=1, successful=1, total_triples=1)) == (
        "Seeded 1 conversation in 0.2 s: 1 succeeded; 1 triple")
    assert str(result(total=37, skipped=37)) == (
        "Nothing to seed: all 37 conversations already seeded")
    assert str(result(total=1, skipped=1)) == "Nothing to seed: the conversation is already seeded"
    assert str(result(total=37, successful=12, failed=1, skipped=24, total_triples=30)) == (
        "Seeded 37 conversations in 0.2 s: 12 succeeded, 1 failed, 24 already seeded; "
        "30 triples")
    # Without its results a stopped run cannot tell what its skipped were.
    assert describe_seed_result(result(total=6, successful=2, skipped=4, total_triples=2,
                                       stopped_reason="quota exhausted")) == (
        "Seeded 6 conversations in 0.2 s: 2 succeeded, 4 skipped (not sent or already "
        "seeded); 2 triples. The run stopped early: quota exhausted")


def test_a_run_that_seeded_nothing_does_not_say_seeded():
    assert str(result(total=2, failed=2)) == "2 conversations in 0.2 s: 2 failed"
    assert str(result(total=1, failed=1)) == "1 conversation in 0.2 s: 1 failed"
    assert str(result(total=3, failed=1, skipped=2)) == (
        "3 conversations in 0.2 s: 1 failed, 2 already seeded")
    assert str(result(total=3, skipped=3, stopped_reason="quota exhausted")) == (
        "3 conversations in 0.2 s: 0 succeeded, 3 skipped (not sent or already seeded). "
        "The run stopped early: quota exhausted")


def test_skipped_rows_are_counted_by_reason_when_the_run_kept_them():
    rows = tuple(ConversationResult(conversation_id=f"c{n}", entity_id="u1", status="skipped",
                                    reason=why)
                 for n, why in enumerate(["already seeded", "already seeded",
                                          "already in this run (twice in the input)"]))
    assert str(result(total=3, skipped=3, results=rows)) == (
        "Nothing to seed: 2 already seeded, 1 already in this run")


def test_skipped_rows_read_as_counts_whatever_the_count():
    def skipped(*reasons):
        return tuple(ConversationResult(conversation_id=f"c{n}", entity_id="u1",
                                        status="skipped", reason=why)
                     for n, why in enumerate(reasons))

    stopped = "run stopped (quota exhausted) before it was sent"
    in_flight = "run stopped (quota exhausted) before it finished; the next run sends it"
    partly = "run stopped (quota exhausted) after 2 of 5 chunks; the next run sends the rest"
    rows = skipped(ALREADY_SEEDED, stopped, in_flight, partly)
    assert str(result(total=5, successful=1, skipped=4, total_triples=3, results=rows,
                      stopped_reason="quota exhausted (HTTP 429)")) == (
        "Seeded 5 conversations in 0.2 s: 1 succeeded, 2 not sent, 1 already seeded, "
        "1 partly sent; 3 triples. The run stopped early: quota exhausted (HTTP 429)")
    assert str(result(total=1, skipped=1, results=skipped(stopped),
                      stopped_reason="quota exhausted")) == (
        "1 conversation in 0.2 s: 0 succeeded, 1 not sent. The run stopped early: quota "
        "exhausted")
    # A reason of another kind keeps its words after "skipped".
    assert str(result(total=2, skipped=2, results=skipped("held back", "held back"))) == (
        "Nothing to seed: 2 skipped (held back)")


def test_the_cli_says_nothing_to_seed_and_singulars(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u1", "conversations": [
        conversation("c1", "I live in Oslo.")]}))
    db = str(tmp_path / "m.duckdb")

    def run():
        out, err = io.StringIO(), io.StringIO()
        code = main(["seed", str(path), "--db", db, "--backend", "local"],
                    stdout=out, stderr=err)
        return code, out.getvalue()

    code, out = run()
    assert code == 0 and out.startswith("Seeded 1 conversation in ")
    assert ": 1 succeeded; " in out and "conversations" not in out.splitlines()[0]
    code, out = run()
    assert code == 0 and out.startswith("Nothing to seed: the conversation is already seeded. "
                                        "Database: ")


def test_the_cli_lists_failures_by_their_short_reason(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u1", "conversations": [ROBOT]}))
    out = io.StringIO()
    code = main(["seed", str(path), "--db", str(tmp_path / "m.duckdb"), "--backend", "local"],
                stdout=out, stderr=io.StringIO())
    assert code == 1
    assert "u1 / bad: role 'robot' is not one of" in out.getvalue()


def test_a_seed_result_displays_as_a_small_html_table():
    html = result(total=3, successful=1, failed=1, skipped=1, total_triples=4,
                  prompt_tokens=1200, completion_tokens=80, cost=0.0021,
                  stopped_reason="quota <exhausted>")._repr_html_()
    assert html.startswith("<table") and html.endswith("</table>")
    assert "<th style='text-align:left'>failed</th><td style='text-align:left'>1</td>" in html
    assert "1,200 prompt + 80 completion" in html and "$0.0021" in html
    assert "quota &lt;exhausted&gt;" in html  # escaped
    plain = result(total=2, successful=2, total_triples=3)._repr_html_()
    assert "tokens" not in plain and "cost" not in plain and "stopped" not in plain
    assert "Seeded 2 conversations in 0.2 s: 2 succeeded; 3 triples" in plain


# --- the panel -----------------------------------------------------------------------------

def panel_frame(conversations: int, broken: bool) -> pd.DataFrame:
    rows = [("u1", f"c{n:02}", "user", f"I live in City{n}.") for n in range(conversations)]
    if broken:
        rows.append(("u1", "bad", "robot", "beep"))
    return pd.DataFrame(rows, columns=["entity_id", "conversation_id", "role", "content"])


def run_panel(panel):
    async def click():
        return await panel.run()
    return asyncio.run(click())


def test_the_panel_shows_failures_first_with_reasons_and_where_the_rest_are(tmp_path):
    db = str(tmp_path / "panel.duckdb")
    run_panel(SeedPanel(panel_frame(24, broken=False), db=db, backend="local"))
    panel = SeedPanel(panel_frame(24, broken=True), db=db, backend="local")
    run_panel(panel)
    shown = [item["data"]["text/plain"] for item in panel.output.outputs]
    assert shown == ["Failures (1): row 1 of 1 (every row is in panel.results and "
                     "panel.failures)",
                     "Results (25 conversations): rows 1–20 of 25 (every row is in "
                     "panel.results and panel.failures)"]
    html = panel.failures_pager.table.value
    assert "role &#x27;robot&#x27; is not one of" in html or "role 'robot' is not one of" in html
    # The results table: the failure first, then the 24 skipped, each saying why; 20 a page.
    assert panel.results.status.tolist() == ["failed"] + ["skipped"] * 24
    assert panel.results_pager.table.value.count("already seeded") == 19
    assert panel.results_pager.next().status.tolist() == ["skipped"] * 5
    assert panel.results_pager.table.value.count("already seeded") == 5


def test_the_panel_says_one_entity_one_conversation_one_retry():
    from memori_nb.panel import describe_counters

    line = describe_counters(SeedCounters(total=1, processed=1, successful=1, retries=1,
                                          triples=1))
    assert "1 retry &middot;" in line and line.endswith("1 triple")
    assert "2 retries" in describe_counters(SeedCounters(total=1, retries=2, triples=2))
    pytest.importorskip("ipywidgets")
    panel = SeedPanel([SeedData.for_conversations(entity_id="u1", conversations=[
        conversation("c1", "I live in Oslo.")])], db=":memory:", backend="local")
    assert repr(panel) == "<SeedPanel 1 entity, 1 conversation, idle>"
    assert "Seed 1 entity, 1 conversation</h3>" in panel.widget.children[0].value
    two = SeedPanel(panel_frame(3, broken=False), db=":memory:", backend="local")
    assert repr(two) == "<SeedPanel 1 entity, 3 conversations, idle>"
