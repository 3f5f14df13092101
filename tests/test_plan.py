"""plan(): what a run would send, skip as already seeded, or fail, against a real DuckDB
ledger; its estimates, ETA and warnings; its text and HTML."""

from __future__ import annotations

import asyncio
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
