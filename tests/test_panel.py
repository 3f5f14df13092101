"""The seeding panel, driven from code as its buttons would drive it (no browser needed)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import API_KEY
from memori_nb.models import ConversationResult, SeedCounters, SeedData
from memori_nb.notebook import results as stored_results
from memori_nb.notebook import runs
from memori_nb.panel import SeedPanel, WidgetProgress, seed_panel
from memori_nb.testing import AugmentationServer


def frame(conversations: int = 4, *, broken: bool = False) -> pd.DataFrame:
    rows = []
    for n in range(conversations):
        entity = "u1" if n % 2 == 0 else "u2"
        rows += [(entity, f"c{n}", "user", f"I live in City{n}. I love jazz."),
                 (entity, f"c{n}", "assistant", "Nice!"),
                 (entity, f"c{n}", "user", "I have a dog named Rex.")]
    if broken:
        rows.append(("u2", "bad", "robot", "beep"))
    return pd.DataFrame(rows, columns=["entity_id", "conversation_id", "role", "content"])


def run(panel: SeedPanel):
    async def click_run():
        return await panel.run()
    return asyncio.run(click_run())


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def shown_pagers(panel: SeedPanel) -> list:
    """The pagers the panel's output shows, top to bottom (each item is a widget view)."""
    pagers = {pager.widget.model_id: pager
              for pager in (panel.failures_pager, panel.results_pager) if pager}
    return [pagers[item["data"][WIDGET_VIEW]["model_id"]] for item in panel.output.outputs]


def output_html(panel: SeedPanel) -> str:
    """The tables the panel's output shows (the page each pager is on)."""
    return "".join(pager.table.value for pager in shown_pagers(panel))


def frame_with_invalid(valid: int) -> pd.DataFrame:
    """``valid`` one-message conversations c00, c01 ... and three invalid ones."""
    rows = [("u1", f"c{n:02d}", "user", f"I live in City{n}.") for n in range(valid)]
    rows += [("u1", "bad-role", "robot", "beep"), ("u1", "bad-empty", "user", ""),
             ("u2", "bad-blank", "user", "   ")]
    return pd.DataFrame(rows, columns=["entity_id", "conversation_id", "role", "content"])


def test_importing_the_panel_does_not_import_ipywidgets():
    code = ("import sys, memori_nb, memori_nb.panel; "
            "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_panel_shows_the_chunking_stats_on_creation(monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    panel = seed_panel(frame(4, broken=True), db=":memory:")
    html = panel.stats_html.value
    assert "Totals" in html and "Per entity" in html
    assert "<td>u1</td>" in html and "<td>u2</td>" in html
    assert "Invalid conversations" in html and "robot" in html
    assert panel.progress.max == 5 and panel.progress.value == 0
    assert panel.backend.value == "local"  # no key: never the cloud by default


def test_dry_run_uses_the_chosen_limits_and_sends_nothing(tmp_path):
    db = tmp_path / "dry.duckdb"
    panel = SeedPanel(frame(2), db=str(db), backend="local")
    assert panel.dry_run()["requests"].tolist() == [1, 1]
    panel.max_messages.value = 2
    stats = panel.dry_run()
    assert stats["requests"].tolist() == [2, 2]
    assert stats["over_limit"].all()
    html = panel.stats_html.value
    assert "Dry run" in html and "at most 2 messages" in html and "Nothing was sent" in html
    assert "4 requests" in html
    assert not db.exists()  # nothing written either


def test_run_updates_counters_and_shows_results_and_failures(tmp_path):
    db = str(tmp_path / "run.duckdb")
    panel = SeedPanel(frame(6, broken=True), db=db, backend="local")
    result = run(panel)
    assert (result.total, result.successful, result.failed) == (7, 6, 1)
    assert panel.progress.value == panel.progress.max == 7
    assert panel.progress.bar_style == "warning"  # one conversation failed
    counts = panel.counters.value
    assert "7/7" in counts and "6 succeeded" in counts and "1 failed" in counts
    assert f"{result.total_triples} triples" in counts
    assert "6 succeeded, 1 failed" in panel.status.value
    html = output_html(panel)
    assert "Results (7 conversations)" in html and "Failures (1)" in html and "robot" in html
    assert len(panel.results) == 7 and panel.failures.conversation_id.tolist() == ["bad"]
    assert not panel.running and not panel.run_button.disabled and panel.stop_button.disabled
    assert len(stored_results(db)) == 7


def test_a_clean_run_ends_green_and_a_second_run_skips_everything(tmp_path):
    db = str(tmp_path / "again.duckdb")
    panel = SeedPanel(frame(4), db=db, backend="local")
    run(panel)
    assert panel.progress.bar_style == "success"
    again = run(panel)
    assert (again.successful, again.skipped) == (0, 4)
    assert "4 skipped" in panel.counters.value
    assert "already seeded" in panel.status.value


def test_memory_database_keeps_its_ledger_between_runs():
    panel = SeedPanel(frame(2), db=":memory:", backend="local")
    run(panel)
    assert run(panel).skipped == 2


def test_force_sends_again(tmp_path):
    panel = SeedPanel(frame(2), db=str(tmp_path / "f.duckdb"), backend="local")
    run(panel)
    panel.force.value = True
    assert run(panel).successful == 2


def test_memori_backend_needs_a_key(monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    panel = SeedPanel(frame(2), db=":memory:")
    panel.backend.value = "memori"
    assert panel.run_button.disabled
    assert "MEMORI_API_KEY" in panel.backend_hint.value
    assert "needs MEMORI_API_KEY" in panel.backend.label
    assert run(panel) is None  # driven from code anyway: refused before anything is sent
    assert "Cannot start" in panel.status.value and "API key" in panel.status.value
    panel.backend.value = "local"
    assert not panel.run_button.disabled and panel.backend_hint.value == ""


def test_a_run_refused_for_a_missing_key_leaves_no_database_file(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    db = tmp_path / "never.duckdb"
    panel = SeedPanel(frame(2), db=str(db))
    panel.backend.value = "memori"
    assert run(panel) is None
    assert "API key" in panel.status.value and not db.exists()


def test_memori_backend_is_the_default_with_a_key(monkeypatch):
    monkeypatch.setenv("MEMORI_API_KEY", "k")
    panel = SeedPanel(frame(2), db=":memory:")
    assert panel.backend.value == "memori" and not panel.run_button.disabled


def test_run_needs_a_running_loop():
    panel = SeedPanel(frame(2), db=":memory:", backend="local")
    with pytest.raises(RuntimeError, match="running event loop"):
        panel.run()


def test_stop_saves_finished_conversations_and_run_again_continues(tmp_path):
    db = str(tmp_path / "stop.duckdb")
    data = frame(6)
    with AugmentationServer(api_key=API_KEY, latency=0.2) as server:
        panel = SeedPanel(data, db=db, backend="memori", api_key=API_KEY,
                          base_url=server.url)
        panel.batch_size.value = 1

        async def click_run_then_stop():
            task = panel.run()
            deadline = time.monotonic() + 10
            while panel.sink is None or panel.sink.counters is None or \
                    panel.sink.counters.successful < 2:
                assert time.monotonic() < deadline, "the run did not progress"
                await asyncio.sleep(0.02)
            assert panel.running and not panel.stop_button.disabled
            assert panel.stop() is True
            return await task

        assert asyncio.run(click_run_then_stop()) is None
        status = panel.status.value
        saved = panel.sink.counters.successful
        assert 2 <= saved < 6
        assert f"stopped — {saved} conversations saved; Run again to continue" in status
        assert runs(db).status[0] == "interrupted"
        stored = stored_results(db)
        assert (stored.status == "succeeded").sum() == saved
        assert not panel.running and panel.stop() is False

        again = run(panel)
        assert (again.skipped, again.successful) == (saved, 6 - saved)
        assert runs(db).status[0] == "completed"
        # a conversation saved by the stopped run was not sent again
        first_run = set(stored.conversation_id[stored.status == "succeeded"])
        # (a request cut off by Stop may reach the server without its body)
        sent = [request.body["conversation"]["messages"][0]["content"]
                for request in server.requests if request.body is not None]
        for cid in first_run:
            assert sent.count(f"I live in City{cid[1:]}. I love jazz.") == 1
        assert len(sent) <= 7  # 6, plus the one in flight when Stop was clicked


def test_widget_progress_is_throttled():
    now = [0.0]
    bar = SimpleNamespace(value=0, max=0, bar_style="")
    label = SimpleNamespace(value="")
    sink = WidgetProgress(bar, label, clock=lambda: now[0])
    counters = SeedCounters(total=1000)
    sink.start(counters)
    result = ConversationResult(conversation_id="c", entity_id="u", status="succeeded",
                                triples_count=1)
    for _ in range(1000):
        counters.count(result)
        sink.update(counters, result)
        now[0] += 0.001  # a thousand conversations in one second
    assert 10 <= sink.refreshes <= 13  # ~10 a second, not 1000
    sink.close(counters)
    assert bar.value == bar.max == 1000 and bar.bar_style == "success"
    assert "1,000 succeeded" in label.value and "1,000 triples" in label.value


def test_widget_progress_shows_rate_elapsed_and_time_left():
    now = [100.0]
    bar = SimpleNamespace(value=0, max=0, bar_style="")
    label = SimpleNamespace(value="")
    sink = WidgetProgress(bar, label, clock=lambda: now[0], interval=0)
    counters = SeedCounters(total=400)
    sink.start(counters)
    result = ConversationResult(conversation_id="c", entity_id="u", status="succeeded")
    for _ in range(100):
        counters.count(result)
    now[0] += 50.0  # 100 conversations in 50 s: 2 a second, 300 left
    sink.update(counters, result)
    assert "2.0 conv/s" in label.value and "0:50 elapsed" in label.value
    assert "about 2:30 left" in label.value
    sink.close(counters)  # stopped here: no time left to wait for
    assert "0:50 elapsed" in label.value and "left" not in label.value
    for _ in range(300):
        counters.count(result)
    now[0] += 3600.0
    sink.close(counters)
    assert "1:00:50 elapsed" in label.value and "left" not in label.value


def test_panel_displays_as_a_widget():
    panel = SeedPanel([SeedData.for_conversations(entity_id="u", conversations=[
        {"id": "c", "messages": [{"role": "user", "content": "hi"}]}])],
        db=":memory:", backend="local")
    bundle = panel._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "1 entity, 1 conversation<" in panel.widget.children[0].value


def test_stop_before_the_run_starts_sends_nothing(tmp_path):
    panel = SeedPanel(frame(2), db=str(tmp_path / "early.duckdb"), backend="local")

    async def click_run_and_stop_at_once():
        task = panel.run()
        assert panel.stop() is True
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(click_run_and_stop_at_once())
    assert "nothing was sent" in panel.status.value
    assert not (tmp_path / "early.duckdb").exists()


def test_unknown_backend_name_is_refused():
    from memori_nb.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown backend 'cloud'"):
        SeedPanel(frame(2), db=":memory:", backend="cloud")


def test_a_backend_object_is_offered_as_custom(tmp_path):
    from memori_nb import LocalBackend

    panel = SeedPanel(frame(2), db=str(tmp_path / "custom.duckdb"), backend=LocalBackend())
    assert panel.backend.value == "custom" and panel.backend.label == "custom: local"
    assert run(panel).successful == 2


def test_dry_run_shows_the_plan_against_the_ledger_and_the_missing_key(monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    panel = seed_panel(frame(4, broken=True), db=":memory:", backend="local")
    panel.dry_run()
    html = panel.stats_html.value
    assert "5 conversations: 4 to send, 0 already seeded, 1 invalid" in html
    assert "to send: 4 requests" in html
    assert run(panel).successful == 4
    stats = panel.dry_run()  # the panel's database now holds them
    assert stats["status"].tolist().count("already_seeded") == 4
    html = panel.stats_html.value
    assert "5 conversations: 0 to send, 4 already seeded, 1 invalid" in html
    panel.force.value = True
    panel.dry_run()
    assert "4 to send, 0 already seeded" in panel.stats_html.value
    panel.force.value = False
    panel.backend.value = "memori"
    panel.dry_run()
    html = panel.stats_html.value
    assert panel.plan.warnings and "MEMORI_API_KEY" in html
    assert html.index("MEMORI_API_KEY") < html.index("Totals")  # above the stats table


def test_results_are_paged_failures_first_and_every_row_is_reachable(tmp_path):
    panel = SeedPanel(frame_with_invalid(45), db=str(tmp_path / "paged.duckdb"),
                      backend="local")
    assert panel.failures_pager is None and panel.results_pager is None  # before a run
    run(panel)
    failures, results = shown_pagers(panel)
    assert (failures, results) == (panel.failures_pager, panel.results_pager)
    assert "Failures (3)" in failures.table.value
    assert failures.widget.children[1].layout.display == "none"  # one page: no buttons
    assert "Results (48 conversations)" in results.table.value
    assert results.label.value == "rows 1–20 of 48"
    assert results.previous_button.disabled and not results.next_button.disabled
    # the failed conversations lead the results, with their short reasons
    assert results.rows["status"].tolist()[:3] == ["failed"] * 3
    seen = list(results.rows["conversation_id"])
    results.next_button.click()
    assert results.label.value == "rows 21–40 of 48"
    assert f"<td>{results.rows['conversation_id'].iloc[0]}</td>" in results.table.value
    seen += list(results.rows["conversation_id"])
    results.next_button.click()
    assert results.label.value == "rows 41–48 of 48" and results.next_button.disabled
    seen += list(results.rows["conversation_id"])
    assert sorted(seen) == sorted(panel.results.conversation_id) and len(seen) == 48
    assert len(panel.results) == 48 and len(panel.failures) == 3  # the frames stay whole
    # where widgets cannot be drawn, the output says what is there and where the rest is
    assert panel.output.outputs[1]["data"]["text/plain"] == (
        "Results (48 conversations): rows 1–20 of 48 (every row is in panel.results and "
        "panel.failures)")


def test_failure_reasons_are_short_in_the_panel(tmp_path):
    panel = SeedPanel(frame_with_invalid(2), db=str(tmp_path / "short.duckdb"),
                      backend="local")
    run(panel)
    table = panel.failures_pager.table.value
    assert "<td>role 'robot' is not one of user, assistant, system" in table
    assert "map it with role_map={'robot': 'user'} (row 2)</td>" in table  # row: after why
    assert table.count("<td>nothing left to send (empty message left out: 1)</td>") == 2
    assert "conversation '" not in table and "row 2:" not in table
    assert panel.progress.bar_style == "warning"


def test_a_failures_table_longer_than_a_page_pages_too(tmp_path):
    rows = [("u1", f"bad{n:02d}", "robot", "beep") for n in range(25)]
    rows.append(("u1", "good", "user", "I live in Oslo."))
    data = pd.DataFrame(rows, columns=["entity_id", "conversation_id", "role", "content"])
    panel = SeedPanel(data, db=":memory:", backend="local")
    run(panel)
    pager = panel.failures_pager
    assert pager.label.value == "rows 1–20 of 25"
    assert pager.next()["conversation_id"].tolist() == [f"bad{n:02d}" for n in range(20, 25)]
    assert "bad24" in pager.table.value and "good" not in pager.table.value


def test_a_new_run_replaces_the_pages(tmp_path):
    panel = SeedPanel(frame_with_invalid(25), db=str(tmp_path / "again.duckdb"),
                      backend="local")
    run(panel)
    first = panel.results_pager
    first.next()
    run(panel)  # the same data again: the valid ones are skipped, the invalid fail again
    assert panel.results_pager is not first and panel.results_pager.page == 1
    assert shown_pagers(panel) == [panel.failures_pager, panel.results_pager]
    assert "already seeded" in output_html(panel)


def test_a_key_that_is_set_but_unusable_is_named_not_asked_for(monkeypatch):
    monkeypatch.setenv("MEMORI_API_KEY", "sk-pasted-with-a-space ")
    panel = seed_panel(frame(2), db=":memory:")
    labels = dict((value, label) for label, value in panel.backend.options)
    assert labels["memori"] == "memori (key or URL unusable)"
    assert panel.backend.value == "local"
    panel.backend.value = "memori"
    assert panel.run_button.disabled
    assert "spaces, line breaks or non-ASCII characters" in panel.backend_hint.value
    assert "sk-pasted" not in panel.backend_hint.value


def test_a_new_run_closes_the_last_runs_pagers(tmp_path):
    panel = SeedPanel(frame(3, broken=True), db=str(tmp_path / "p.duckdb"), backend="local")
    run(panel)
    first = (panel.failures_pager, panel.results_pager)
    run(panel)
    assert all(pager.widget.comm is None for pager in first)  # closed
    assert panel.results_pager.widget.comm is not None
