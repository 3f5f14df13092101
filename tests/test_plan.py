"""plan(): what a run would send, skip as already seeded, or fail, against a real DuckDB
ledger; its estimates, ETA and warnings; its text and HTML."""

from __future__ import annotations

import asyncio
import importlib
import io
import math
from importlib.resources import files

import pandas as pd
import pytest

from helpers import conversation
from memori_nb import Memori, OpenAIBackend, Plan, SeedConfig, SeedData, load_seed_file, plan
from memori_nb.pricing import estimate_requests, message_overhead_of, prompt_overhead_of

SAMPLE = files("memori_nb") / "data" / "sample_conversations.json"


def sample() -> list[SeedData]:
    return load_seed_file(SAMPLE)


def seeded_db(tmp_path, seeds) -> str:
    """A DuckDB file holding ``seeds``, seeded with the offline backend."""
    db = str(tmp_path / "memori.duckdb")
    memori = Memori(db, backend="local")
    try:
        result = asyncio.run(memori.seed(seeds))
    finally:
        memori.close()
    assert result.failed == 0
    return db


def priced_backend() -> OpenAIBackend:
    return OpenAIBackend(model="tiny", base_url="http://127.0.0.1:9/v1", api_key="k",
                         prompt_price=1.0, completion_price=2.0)


def test_a_database_holding_every_conversation_plans_nothing_to_send(tmp_path):
    db = seeded_db(tmp_path, sample())
    the_plan = plan(sample(), db=db, backend="local")
    assert isinstance(the_plan, Plan)
    assert (the_plan.conversations, the_plan.to_send, the_plan.already_seeded,
            the_plan.invalid) == (37, 0, 37, 0)
    assert the_plan.requests == the_plan.messages == the_plan.estimated_tokens == 0
    assert set(the_plan.stats["status"]) == {"already_seeded"}
    assert str(the_plan).splitlines()[:2] == [
        "37 conversations: 0 to send, 37 already seeded, 0 invalid",
        "nothing to send: all 37 already seeded"]
    # Memori.plan asks its own store and backend.
    memori = Memori(db, backend="local")
    try:
        assert memori.plan(sample()).already_seeded == 37
    finally:
        memori.close()


def test_half_seeded_plans_the_rest_and_content_changes_count_as_new(tmp_path):
    seeds = sample()
    first = seeds[0]
    seeded = SeedData.for_conversations(entity_id=first.entity_id,
                                        conversations=list(first.conversations)[:5])
    db = seeded_db(tmp_path, [seeded])
    the_plan = plan(seeds, db=db, backend="local")
    assert (the_plan.to_send, the_plan.already_seeded) == (32, 5)
    sending = the_plan.stats[the_plan.stats["status"] == "to_send"]
    assert the_plan.requests == int(sending["requests"].sum())
    assert the_plan.messages == int(sending["messages"].sum())
    assert the_plan.stats["status"].iloc[:5].tolist() == ["already_seeded"] * 5
    # The ledger keys on the content: an edited conversation is sent again.
    changed = [dict(c) for c in first.conversations]
    changed[0] = {**changed[0], "messages": changed[0]["messages"] + [
        {"role": "user", "content": "One more thing."}]}
    edited = SeedData.for_conversations(entity_id=first.entity_id, conversations=changed)
    again = plan([edited], db=db, backend="local")
    assert (again.to_send, again.already_seeded) == (len(changed) - 4, 4)


def test_invalid_conversations_are_counted_not_sent(tmp_path):
    data = SeedData.for_conversations(entity_id="u1", conversations=[
        conversation("ok", "I live in Lisbon."), {"id": "bad", "messages": []},
        conversation("also-ok", "I have a dog.", "Nice!")])
    the_plan = plan(data, db=str(tmp_path / "none.duckdb"), backend="local")
    assert (the_plan.to_send, the_plan.already_seeded, the_plan.invalid) == (2, 0, 1)
    assert the_plan.stats["status"].tolist() == ["to_send", "invalid", "to_send"]
    assert the_plan.requests == 2 and the_plan.messages == 3
    assert str(the_plan).startswith("3 conversations: 2 to send, 0 already seeded, 1 invalid")
    assert not (tmp_path / "none.duckdb").exists()  # planning creates no database


def test_an_id_repeated_in_another_seed_of_its_entity_is_planned_as_not_sent():
    seeds = [SeedData.for_conversations(entity_id=entity, conversations=[
        conversation(cid, text)]) for entity, cid, text in [
            ("u1", "a", "I live in Paris."), ("u2", "a", "I live in Oslo."),
            ("u1", "a", "I live in Rome."), ("u1", "b", "I have a dog."),
            ("u1", "b", "I have a dog.")]]
    the_plan = plan(seeds, backend="local")
    assert (the_plan.to_send, the_plan.already_seeded, the_plan.invalid) == (3, 1, 1)
    # Other content fails in the run; the same content (same size) is skipped there.
    assert the_plan.stats["status"].tolist() == [
        "to_send", "to_send", "invalid", "to_send", "already_seeded"]
    assert the_plan.stats["error"][2] == (
        "conversation 'a': duplicate id for entity 'u1', first used at position 0 of the "
        "input; ids must be unique per entity, so this copy (position 2) is not sent")
    assert the_plan.warnings == ("1 conversation id met again in another record of its "
                                 "entity, the same size as the first copy: counted as already "
                                 "seeded (the run skips a copy with the same content, and fails "
                                 "one with other content)",)


def test_force_plans_to_send_everything_again(tmp_path):
    db = seeded_db(tmp_path, sample())
    the_plan = plan(sample(), db=db, backend="local", force=True)
    assert (the_plan.to_send, the_plan.already_seeded) == (37, 0)
    assert the_plan.force and the_plan.requests >= 37


def test_the_default_backend_without_a_key_is_a_warning(monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    the_plan = plan(sample())
    assert the_plan.backend == "memori"
    assert len(the_plan.warnings) == 1 and "MEMORI_API_KEY" in the_plan.warnings[0]
    assert "warning: nothing can be sent" in str(the_plan)
    monkeypatch.setenv("MEMORI_API_KEY", "a-key")
    assert plan(sample()).warnings == ()
    assert plan(sample(), backend="local").warnings == ()


def test_cost_and_tokens_when_the_backend_has_prices(tmp_path):
    backend = priced_backend()
    seeds = sample()
    db = seeded_db(tmp_path, [seeds[0]])
    the_plan = plan(seeds, db=db, backend=backend)
    sending = the_plan.stats[the_plan.stats["status"] == "to_send"]
    expected = estimate_requests(int(sending["characters"].sum()),
                                 int(sending["requests"].sum()),
                                 overhead_characters=prompt_overhead_of(backend),
                                 messages=int(sending["messages"].sum()),
                                 message_overhead_characters=message_overhead_of(backend),
                                 pricing=backend.pricing)
    assert the_plan.to_send == 37 - seeds[0].size
    assert the_plan.prompt_tokens == expected.prompt_tokens
    assert the_plan.completion_tokens == expected.completion_tokens
    assert the_plan.cost == pytest.approx(expected.cost) and the_plan.cost > 0
    assert f"${the_plan.cost:,.4f}" in str(the_plan)
    # Named backends that do not bill by token say nothing about tokens or cost.
    local = plan(seeds, backend="local")
    assert local.prompt_tokens is None and local.cost is None
    assert "estimate:" not in str(local)


def test_eta_is_waves_of_batch_size_times_the_assumed_latency():
    backend = priced_backend()
    the_plan = plan(sample(), backend=backend, batch_size=4, latency=3.0)
    assert the_plan.requests == 37 and the_plan.batch_size == 4
    assert the_plan.eta_seconds == math.ceil(37 / 4) * 3.0 == 30.0
    assert "time: about 30 s (37 requests, 4 at a time, 3 s each: assumed)" in str(the_plan)
    config = SeedConfig(batch_size=40)
    assert plan(sample(), backend=backend, seed_config=config).eta_seconds == 2.0
    # The offline extractor waits on no network: no ETA from a network latency.
    assert plan(sample(), backend="local").eta_seconds is None


def test_singulars_and_a_dataframe_input():
    frame = pd.DataFrame({"conversation_id": ["c1"], "role": ["user"],
                          "content": ["I live in Oslo."]})
    the_plan = plan(frame, backend="local", entity_id="u1")
    assert str(the_plan).splitlines()[:2] == [
        "1 conversation: 1 to send, 0 already seeded, 0 invalid",
        "to send: 1 request, about 4 tokens (1 message)"]


def test_html_shows_the_counts_and_warnings(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    db = seeded_db(tmp_path, sample())
    page = plan(sample(), db=db)._repr_html_()
    assert "37 conversations: 0 to send, 37 already seeded, 0 invalid" in page
    assert "nothing to send: all 37 already seeded" in page
    assert "<th style='text-align:left'>already seeded</th><td style='text-align:right'>37" in page
    assert "MEMORI_API_KEY" in page
    page = plan(sample(), backend=priced_backend(), batch_size=4, latency=3.0)._repr_html_()
    assert ">37<" in page and "about 30 s" in page and "$" in page


def test_a_stream_of_seed_data_is_planned_in_one_pass(tmp_path):
    db = seeded_db(tmp_path, sample())
    the_plan = plan(iter(sample()), db=db, backend="local")
    assert (the_plan.conversations, the_plan.already_seeded) == (37, 37)


def test_bad_latency_is_refused():
    from memori_nb import ConfigurationError

    with pytest.raises(ConfigurationError, match="latency"):
        plan(sample(), backend="local", latency=-1)
    with pytest.raises(ConfigurationError, match="latency"):
        plan(sample(), backend="local", latency="2 s")


def test_memori_sql_tables_are_asked_too(tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("onnxruntime")
    url = f"sqlite:///{tmp_path / 'memori.db'}"
    seeds = sample()
    memori = Memori(url, backend="local")
    try:
        assert asyncio.run(memori.seed(seeds[:1])).failed == 0
        the_plan = memori.plan(seeds)
    finally:
        memori.close()
    assert (the_plan.to_send, the_plan.already_seeded) == (37 - seeds[0].size, seeds[0].size)
    assert plan(seeds, db=url, backend="local").already_seeded == seeds[0].size


# --- a plan only reads the database -------------------------------------------------------

def one_conversation_frame() -> pd.DataFrame:
    return pd.DataFrame({"conversation_id": ["c1", "c1"], "role": ["user", "assistant"],
                         "content": ["I live in Oslo.", "Nice!"]})


def test_a_sqlite_url_to_a_missing_file_creates_nothing(tmp_path):
    pytest.importorskip("sqlalchemy")
    path = tmp_path / "new.sqlite"
    for db in (f"sqlite:///{path}", __import__("sqlalchemy").create_engine(f"sqlite:///{path}")):
        the_plan = plan(one_conversation_frame(), db=db, backend="local", entity_id="u1")
        assert (the_plan.to_send, the_plan.warnings) == (1, ())
        assert not path.exists()


def test_a_database_without_memori_nb_tables_is_an_empty_ledger_and_stays_as_it_was(tmp_path):
    import sqlite3

    import duckdb

    pytest.importorskip("sqlalchemy")
    lite = tmp_path / "app.sqlite"
    with sqlite3.connect(lite) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    duck = tmp_path / "app.duckdb"
    duckdb.connect(str(duck)).execute("CREATE TABLE notes (x VARCHAR)").close()
    for db in (f"sqlite:///{lite}", str(duck)):
        the_plan = plan(one_conversation_frame(), db=db, backend="local", entity_id="u1")
        assert (the_plan.to_send, the_plan.already_seeded, the_plan.warnings) == (1, 0, ())
    with sqlite3.connect(lite) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
    with duckdb.connect(str(duck)) as conn:
        assert conn.execute("SELECT table_name FROM duckdb_tables()").fetchall() == [("notes",)]


def test_an_earlier_versions_ledger_without_its_newer_table_is_reported_unread(tmp_path):
    import duckdb

    db = str(tmp_path / "old.duckdb")
    with duckdb.connect(db) as conn:
        conn.execute("CREATE TABLE seeded_conversations (entity_id VARCHAR, conversation_id "
                     "VARCHAR, content_hash VARCHAR, run_id VARCHAR, seeded_at TIMESTAMP)")
    warning, = plan(one_conversation_frame(), db=db, backend="local",
                    entity_id="u1").warnings
    assert warning.startswith("ledger not read: ") and "partial_conversations" in warning
    with duckdb.connect(db) as conn:  # and it stays as it was: no table added
        assert len(conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()) == 1


def test_a_postgresql_database_is_not_built_by_a_plan(pg_url):
    the_plan = plan(one_conversation_frame(), db=pg_url, backend="local", entity_id="u1")
    assert (the_plan.to_send, the_plan.warnings) == (1, ())
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM information_schema.tables WHERE "
                                        "table_schema = current_schema()").scalar() == 0
    finally:
        engine.dispose()


def test_a_seeded_postgresql_ledger_is_read(pg_url):
    pytest.importorskip("onnxruntime")
    seeds = sample()
    memori = Memori(pg_url, backend="local")
    try:
        assert asyncio.run(memori.seed(seeds[:1])).failed == 0
    finally:
        memori.close()
    assert plan(seeds, db=pg_url, backend="local").already_seeded == seeds[0].size


def test_a_duckdb_file_held_by_another_process_is_planned_without_its_ledger(tmp_path):
    import subprocess
    import sys

    db = seeded_db(tmp_path, sample())
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({db!r}); "
                               f"print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        the_plan = plan(sample(), db=db, backend="local")
        assert (the_plan.to_send, the_plan.already_seeded) == (37, 0)
        warning, = the_plan.warnings
        assert warning.startswith(f"ledger not read: DuckDB database {db!r} is in use by "
                                  f"process {holder.pid} (python")
        assert warning.endswith("); already-seeded conversations are counted as to send")
        # The CLI's dry run says so, and still plans.
        from memori_nb.cli import main

        out, err = io.StringIO(), io.StringIO()
        assert main(["seed", str(SAMPLE), "--dry-run", "--db", db, "--backend", "local"],
                    stdout=out, stderr=err) == 0
        assert "conversations  37: 37 to send, 0 already seeded" in out.getvalue()
        assert f"Warning: ledger not read: DuckDB database {db!r} is in use by process " \
               f"{holder.pid}" in out.getvalue()
    finally:
        holder.communicate("")  # closes its stdin: it exits
    assert plan(sample(), db=db, backend="local").already_seeded == 37


# --- the ETA ------------------------------------------------------------------------------

def test_a_long_conversations_chunks_go_one_after_another_in_the_eta():
    backend = priced_backend()
    marathon = pd.DataFrame({"conversation_id": "big", "role": ["user", "assistant"] * 1500,
                             "content": "m"})
    config = SeedConfig(max_messages_per_request=10)
    the_plan = plan(marathon, backend=backend, seed_config=config, batch_size=10,
                    entity_id="u1")
    assert (the_plan.requests, the_plan.longest) == (300, 300)
    # 30 waves of 10 requests if they could go together; one conversation's go in turn.
    assert the_plan.eta_seconds == 300 * 2.0
    assert the_plan.describe_eta() == (
        "about 10 min (300 requests, 10 at a time, the longest conversation's 300 one after "
        "another, 2 s each: assumed)")
    # Beside many short conversations the waves still count.
    many = pd.concat([marathon.assign(conversation_id="big").iloc[:100]] + [
        pd.DataFrame({"conversation_id": f"c{i}", "role": ["user"], "content": ["hi"]})
        for i in range(200)])
    mixed = plan(many, backend=backend, seed_config=config, batch_size=10, entity_id="u1")
    assert (mixed.requests, mixed.longest) == (210, 10)
    assert mixed.eta_seconds == 21 * 2.0
    assert "longest" not in mixed.describe_eta()


# --- the ledger is asked in few queries ---------------------------------------------------

def test_the_ledger_is_asked_once_for_the_entities_of_a_list_and_not_at_all_for_a_stream(
        tmp_path, monkeypatch):
    from memori_nb.stores import DuckDBStore

    seeds = sample()
    db = seeded_db(tmp_path, seeds[:2])
    asked = {"entities": 0, "keys": 0}
    entities, keys = DuckDBStore.seeded_entities, DuckDBStore.already_seeded

    def count_entities(self, ids):
        asked["entities"] += 1
        return entities(self, ids)

    def count_keys(self, batch, **kwargs):
        asked["keys"] += 1
        return keys(self, batch, **kwargs)

    monkeypatch.setattr(DuckDBStore, "seeded_entities", count_entities)
    monkeypatch.setattr(DuckDBStore, "already_seeded", count_keys)
    monkeypatch.setattr(importlib.import_module("memori_nb.plan"), "_LEDGER_WINDOW", 10)
    expected = seeds[0].size + seeds[1].size
    the_plan = plan(seeds, db=db, backend="local")
    assert the_plan.already_seeded == expected
    assert asked["entities"] == 1  # three entities, one query
    assert asked["keys"] == math.ceil(expected / 10)  # the keys of the known entities
    asked.update(entities=0, keys=0)
    assert plan(iter(seeds), db=db, backend="local").already_seeded == expected
    assert asked["entities"] == 0 and asked["keys"] == math.ceil(37 / 10)


# --- words --------------------------------------------------------------------------------

def test_repr_says_singulars_and_the_plan_uses_wording_plural():
    the_plan = plan(one_conversation_frame(), backend="local", entity_id="u1")
    assert repr(the_plan) == "<Plan 1 conversation: 1 to send, 0 already seeded, 0 invalid>"
    assert repr(plan(sample(), backend="local")) == (
        "<Plan 37 conversations: 37 to send, 0 already seeded, 0 invalid>")
    assert not hasattr(importlib.import_module("memori_nb.plan"), "count_noun")


def test_the_chunking_plot_marks_the_default_limits_without_a_config():
    pytest.importorskip("matplotlib")
    from memori_nb import chunking_stats
    from memori_nb.plots import plot_chunking_stats

    stats = chunking_stats(sample())
    characters_ax, messages_ax, _ = plot_chunking_stats(stats).axes
    legend = [t.get_text() for t in characters_ax.get_legend().get_texts()]
    assert legend == ["limit: 800,000 characters per request\nevery conversation fits"]
    legend = [t.get_text() for t in messages_ax.get_legend().get_texts()]
    assert legend == ["limit: 4,000 messages per request\nevery conversation fits"]
    # An explicit config still sets the limits.
    small = SeedConfig(max_messages_per_request=2)
    _, messages_ax, _ = plot_chunking_stats(chunking_stats(sample(), small),
                                            config=small).axes
    assert messages_ax.get_legend().get_texts()[0].get_text().startswith(
        "limit: 2 messages per request")


def test_the_dry_runs_json_warnings_and_invalid_lines_read_as_the_cli_speaks(tmp_path,
                                                                            monkeypatch):
    import json

    from memori_nb.cli import main

    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u1", "conversations": [
        conversation("ok", "hi"), {"id": "c2", "messages": [{"role": "wizard",
                                                              "content": "x"}]}]}))
    out = io.StringIO()
    main(["seed", str(path), "--dry-run", "--json"], stdout=out, stderr=io.StringIO())
    warning, = json.loads(out.getvalue())["plan_warnings"]
    assert "MEMORI_API_KEY" in warning and "api_key=" not in warning
    assert "backend='local'" not in warning and "(--backend local)" in warning
    out = io.StringIO()
    main(["seed", str(path), "--dry-run"], stdout=out, stderr=io.StringIO())
    invalid = out.getvalue().split("Invalid (would fail):\n")[1].splitlines()[0]
    assert invalid.startswith("  u1 / c2: role 'wizard' is not one of user, assistant")
    assert invalid.endswith("(messages[0])") and "conversation 'c2'" not in invalid
    assert "characters     2 (about 1 token)\n" in out.getvalue()
