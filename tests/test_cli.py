"""The command line, run in-process through main(argv) and once as a real subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import duckdb
import pytest

import memori_nb
from helpers import conversation
from memori_nb import Memori, MissingApiKeyError
from memori_nb.cli import main
from memori_nb.testing import refusing_url

SAMPLE = str(files("memori_nb") / "data" / "sample_conversations.json")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_seed(tmp_path, conversations, entity_id="user-1"):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": entity_id, "conversations": conversations}))
    return str(path)


def test_dry_run_prints_the_plan_and_sends_nothing(tmp_path):
    db = tmp_path / "memori.duckdb"
    code, out, _ = run("seed", SAMPLE, "--dry-run", "--db", str(db))
    assert code == 0
    assert "dry run" in out and "conversations" in out and "requests" in out
    assert not db.exists()


def test_dry_run_lists_invalid_and_oversized_conversations(tmp_path):
    path = write_seed(tmp_path, [conversation("ok", "hi"), {"id": "bad", "messages": []},
                                 conversation("huge", *["x" * 10] * 4001)])
    code, out, _ = run("seed", path, "--dry-run")
    assert code == 1
    assert "1 invalid" in out and "user-1 / bad: messages is empty" in out
    assert "huge: 4,001 messages" in out and "-> 2 requests" in out
    code, out, _ = run("seed", path, "--dry-run", "--json")
    plan = json.loads(out)
    assert plan["invalid"] == 1 and plan["requests"] == 3 and plan["over_limit"] == 1


def test_seed_with_local_backend_writes_duckdb_and_reruns_skip(tmp_path):
    db = str(tmp_path / "memori.duckdb")
    code, out, err = run("seed", SAMPLE, "--backend", "local", "--db", db, "--json")
    assert code == 0
    summary = json.loads(out)
    assert set(summary) >= {"total", "successful", "failed", "skipped", "total_triples",
                            "duration_ms"}
    assert summary["total"] == summary["successful"] > 30
    assert summary["total_triples"] > 0
    assert "100%" in err  # the progress bar went to stderr
    code, out, _ = run("seed", SAMPLE, "--backend", "local", "--db", db, "--json")
    again = json.loads(out)
    assert code == 0 and again["skipped"] == summary["total"] and again["successful"] == 0
    code, out, _ = run("seed", SAMPLE, "--backend", "local", "--db", db, "--json", "--force")
    assert json.loads(out)["successful"] == summary["total"]
    with duckdb.connect(db) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 3


def test_some_failures_exit_1_and_are_listed(tmp_path):
    path = write_seed(tmp_path, [conversation("ok", "I live in Paris."),
                                 {"id": "bad", "messages": [{"role": "robot", "content": "x"}]}])
    code, out, _ = run("seed", path, "--backend", "local", "--db", str(tmp_path / "db"))
    assert code == 1
    assert "1 succeeded, 1 failed" in out and "role 'robot'" in out


def test_duplicates_are_reported_before_sending(tmp_path):
    path = write_seed(tmp_path, [conversation("d", "a"), conversation("d", "b")])
    code, _, err = run("seed", path, "--backend", "local", "--db", str(tmp_path / "db"))
    assert code == 1
    assert err.index("duplicate id") < err.index("seeding")


def test_an_id_repeated_with_other_content_in_another_line_is_sent_once_in_every_run(
        tmp_path, monkeypatch):
    from helpers import API_KEY
    from memori_nb.testing import AugmentationServer

    monkeypatch.setenv("MEMORI_API_KEY", API_KEY)
    lines = [{"entity_id": "u1", **conversation("a", "I live in Paris.")},
             {"entity_id": "u2", **conversation("a", "I live in Oslo.")},
             {"entity_id": "u1", **conversation("a", "I live in Rome.")}]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    db = str(tmp_path / "m.duckdb")
    with AugmentationServer(api_key=API_KEY) as server:
        outputs, sent = [], []
        for _ in range(2):
            before = server.request_count
            code, out, _ = run("seed", str(path), "--db", db, "--base-url", server.url)
            outputs.append((code, out))
            sent.append(server.request_count - before)
    assert sent == [2, 0]  # u1's and u2's first: the re-run skips them and sends nothing
    reason = ("u1 / a: duplicate id for entity 'u1', first used at position 0 of the input; "
              "ids must be unique per entity, so this copy (position 2) is not sent")
    assert [code for code, _ in outputs] == [1, 1]
    assert "2 succeeded, 1 failed" in outputs[0][1] and reason in outputs[0][1]
    assert "1 failed, 2 already seeded" in outputs[1][1] and reason in outputs[1][1]
    with duckdb.connect(db, read_only=True) as conn:
        stored = conn.sql("SELECT entity_id, content FROM messages ORDER BY ALL").fetchall()
    assert stored == [("u1", "I live in Paris."), ("u2", "I live in Oslo.")]
    code, out, _ = run("seed", str(path), "--db", db, "--dry-run", "--json")
    the_plan = json.loads(out)
    assert (the_plan["to_send"], the_plan["already_seeded"], the_plan["invalid"]) == (0, 2, 1)


def test_memori_backend_without_key_stops_before_sending(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    db = tmp_path / "memori.duckdb"
    code, out, err = run("seed", SAMPLE, "--db", str(db))
    assert code == 2 and out == ""
    assert err == ("error: the 'memori' backend needs an API key: set MEMORI_API_KEY, or use "
                   "the offline backend (--backend local)\n")
    assert not db.exists()  # no empty database left behind
    # Python callers keep the wording of the keyword they pass.
    with pytest.raises(MissingApiKeyError, match=r"pass api_key=\), or use the offline "
                                                 r"backend \(backend='local'"):
        Memori(conn=":memory:").backend_ready()


@pytest.mark.parametrize("argv, env, message", [
    (["--base-url", "ftp://x"], {"MEMORI_API_KEY": "k"},
     "base URL (from MEMORI_API_URL_BASE or --base-url) does not start with http:// or "
     "https://"),
    (["--base-url", "http://[::1"], {"MEMORI_API_KEY": "k"},
     "base URL 'http://[::1' (from MEMORI_API_URL_BASE or --base-url) is not an http(s) address"),
    ([], {"MEMORI_API_KEY": " key"}, "the API key (from MEMORI_API_KEY) has spaces"),
    (["--backend", "openai"], {}, "needs a model: pass --model, or set OPENAI_MODEL"),
])
def test_settings_errors_name_flags_not_python_keywords(tmp_path, monkeypatch, argv, env,
                                                        message):
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.delenv("MEMORI_API_URL_BASE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "memori.duckdb"
    code, out, err = run("seed", SAMPLE, "--db", str(db), *argv)
    assert code == 2 and out == ""
    assert message in err and "=)" not in err and "model=" not in err
    assert not db.exists()


def test_version_prints_the_package_version():
    assert run("--version") == (0, f"memori_nb {memori_nb.__version__}\n", "")


def test_a_mistyped_option_gets_the_commands_usage_and_a_suggestion():
    code, out, err = run("seed", SAMPLE, "--dryrun")
    assert code == 2 and out == ""
    first, usage = err.split("\n", 1)
    assert first == "error: unrecognized arguments: --dryrun (did you mean --dry-run?)"
    assert usage.startswith("usage: python -m memori_nb seed ") and "[--dry-run]" in usage
    # errors inside the command show its usage too, not the top level's
    code, _, err = run("seed", SAMPLE, "--batch-size", "0")
    assert code == 2 and "usage: python -m memori_nb seed " in err


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "cannot tell its format (it is not JSON"),
    ("[1, 2]", "cannot tell its format (it is a list of int)"),
    ('{"entity_id": "u"}', "missing 'conversations'"),
    ('{"entity_id": "u", "conversations": {}}', "'conversations' must be a list"),
])
def test_unusable_files_are_one_clear_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "input.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run("seed", str(path), "--backend", "local", "--db", str(tmp_path / "d"))
    assert code == 2 and out == ""
    assert message in err and str(path) in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["seed", SAMPLE, "--batch-size", "0"],
                                  ["seed", SAMPLE, "--backend", "cloud"], ["seed"], []])
def test_bad_arguments_exit_2(argv):
    code, _, err = run(*argv)
    assert code == 2 and "usage" in err.lower()


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "memori_nb", "seed", SAMPLE, "--dry-run",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["conversations"] > 30


REAL_CHATGPT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "exports" / "chatgpt"
                / "conversations.json")


def test_a_real_chatgpt_export_seeds_with_an_entity_id(tmp_path):
    if not REAL_CHATGPT.exists():
        pytest.skip(f"{REAL_CHATGPT} is not here")
    code, out, err = run("seed", str(REAL_CHATGPT), "--dry-run", "--entity-id", "me")
    assert code == 0 and "conversations  1: 1 to send, 0 already seeded, 0 invalid" in out
    code, out, err = run("seed", str(REAL_CHATGPT), "--backend", "local")
    assert code == 2 and "--entity-id" in err
    db = str(tmp_path / "db")
    code, out, err = run("seed", str(REAL_CHATGPT), "--backend", "local", "--db", db,
                         "--entity-id", "me", "--json")
    assert code == 0 and json.loads(out)["successful"] == 1
    with duckdb.connect(db) as conn:
        title, started, ended, count = conn.execute(
            "select title, started_at, ended_at, message_count from conversations").fetchall()[0]
        said = [row[0] for row in conn.execute(
            "select said_at from messages order by position").fetchall()]
        warnings = conn.execute("select warnings from conversation_results").fetchall()[0][0]
    assert title and count == len(said) > 1
    assert said == sorted(said) and started == said[0] and ended == said[-1]
    assert any("left out" in w for w in warnings)


def test_jsonl_and_csv_files_with_format_and_column_flags(tmp_path):
    lines = [{"conversation_id": "c1", "role": "user", "content": "I live in Lima."},
             {"conversation_id": "c1", "role": "assistant", "content": "Nice."},
             "{broken",
             {"conversation_id": "c2", "role": "user", "content": "I love tea."}]
    path = tmp_path / "chats.txt"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    code, out, _ = run("seed", str(path), "--format", "jsonl", "--entity-id", "u",
                       "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 1 and plan["valid"] == 2 and plan["invalid"] == 1
    assert "line 3" in plan["invalid_conversations"][0]["error"]
    csv = tmp_path / "chats.csv"
    csv.write_text("who,conv,speaker,text\nu,c1,user,I work at Acme.\nu,c1,assistant,Cool\n")
    code, out, err = run("seed", str(csv), "--backend", "local", "--db", str(tmp_path / "d"),
                         "--entity-col", "who", "--conversation-col", "conv", "--role-col",
                         "speaker", "--content-col", "text", "--json")
    assert code == 0, err
    assert json.loads(out)["successful"] == 1


def write_csv(tmp_path, rows, name="chats.csv"):
    path = tmp_path / name
    lines = ["entity_id,conversation_id,role,content,timestamp"]
    lines += [",".join(f'"{v}"' for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_day_first_csv_is_read_day_first_and_its_warnings_are_shown(tmp_path):
    path = write_csv(tmp_path, [
        ("u1", "c1", "User", "I live in Oslo.", "12.01.2024, 13:42:02"),
        ("u1", "c1", "assistant", "", "12.01.2024, 13:43:00"),
        ("u1", "c1", "tool", "{}", "12.01.2024, 13:43:30"),
        ("u1", "c2", "human", "I have a dog named Rex.", "29.12.2023, 22:42:04")])
    db = str(tmp_path / "m.duckdb")
    code, out, _ = run("seed", path, "--backend", "local", "--db", db, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["successful"] == 2
    assert summary["warnings"] == {"empty message left out": 1, "tool message left out": 1}
    said = duckdb.connect(db).execute(
        "SELECT said_at FROM messages WHERE conversation_id = 'c1' ORDER BY position"
    ).fetchall()
    assert str(said[0][0]) == "2024-01-12 13:42:02"
    code, out, _ = run("seed", path, "--dry-run")
    assert "empty message left out" in out and "u1 / c1" in out


def test_an_ambiguous_csv_asks_and_dayfirst_answers(tmp_path):
    path = write_csv(tmp_path, [("u1", "c1", "user", "I live in Oslo.", "03/04/2024 10:00")])
    code, out, err = run("seed", path, "--backend", "local", "--db", str(tmp_path / "d"))
    assert code == 2 and "could be day/month or month/day" in err and "--dayfirst" in err
    code, out, _ = run("seed", path, "--backend", "local", "--db", str(tmp_path / "d"),
                       "--monthfirst", "--json")
    assert code == 0 and json.loads(out)["successful"] == 1


def test_role_map_on_the_command_line(tmp_path):
    path = write_seed(tmp_path, [{"id": "c1", "messages": [
        {"role": "agent", "content": "Hello"}, {"role": "customer", "content": "I live in Rome."},
        {"role": "note", "content": "internal"}]}])
    code, out, err = run("seed", path, "--backend", "local", "--db", str(tmp_path / "d"),
                         "--json", "--role-map", "agent=assistant,note=skip")
    assert code == 0, err
    assert json.loads(out)["warnings"] == {"note message left out": 1}


def test_an_unknown_role_is_explained_with_the_flag_that_maps_it(tmp_path):
    path = write_seed(tmp_path, [{"id": "c1", "messages": [{"role": "robot", "content": "hi"}]}])
    code, out, _ = run("seed", path, "--dry-run", "--backend", "local")
    assert code == 1
    assert "user-1 / c1: role 'robot' is not one of" in out
    assert "map it with --role-map robot=user" in out and "role_map=" not in out
    code, out, err = run("seed", path, "--backend", "local", "--db", str(tmp_path / "d"))
    assert "--role-map robot=user" in out + err and "role_map=" not in out + err


def test_dry_run_on_a_seeded_database_says_nothing_is_left_to_send(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    db = str(tmp_path / "memori.duckdb")
    assert run("seed", SAMPLE, "--backend", "local", "--db", db)[0] == 0
    code, out, _ = run("seed", SAMPLE, "--dry-run", "--db", db)
    assert code == 0
    assert "conversations  37: 0 to send, 37 already seeded, 0 invalid" in out
    assert "requests       0 after chunking" in out
    assert "Nothing to send: all 37 already seeded (--force sends them again)." in out
    # The default backend has no key: the dry run says so before a run would stop on it.
    assert "Warning: nothing can be sent: the 'memori' backend needs an API key" in out
    code, out, _ = run("seed", SAMPLE, "--dry-run", "--db", db, "--backend", "local")
    assert "37 already seeded" in out and "Warning" not in out
    code, out, _ = run("seed", SAMPLE, "--dry-run", "--db", db, "--json")
    plan = json.loads(out)
    assert (plan["to_send"], plan["already_seeded"], plan["requests"]) == (0, 37, 0)
    assert "MEMORI_API_KEY" in plan["plan_warnings"][0]
    code, out, _ = run("seed", SAMPLE, "--dry-run", "--db", db, "--backend", "local",
                       "--force")
    assert "conversations  37: 37 to send, 0 already seeded, 0 invalid" in out


def test_dry_run_gives_an_eta_for_a_network_backend(tmp_path, monkeypatch, server):
    monkeypatch.setenv("MEMORI_API_KEY", "a-key")
    monkeypatch.setenv("MEMORI_API_URL_BASE", server.url)
    path = write_seed(tmp_path, [conversation(f"c{i}", "hello") for i in range(3)])
    code, out, _ = run("seed", path, "--dry-run", "--batch-size", "2",
                       "--db", str(tmp_path / "new.duckdb"))
    assert code == 0 and "Warning" not in out
    assert "conversations  3: 3 to send, 0 already seeded, 0 invalid" in out
    assert "over a limit   0 conversations" in out
    assert "time           about 4 s (3 requests, 2 at a time, 2 s each: assumed)" in out
    assert not (tmp_path / "new.duckdb").exists()
    assert server.request_count == 0  # reached, not asked


def test_dry_run_warns_when_the_server_cannot_be_reached(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORI_API_KEY", "a-key")
    monkeypatch.setenv("NO_PROXY", "localhost")  # a bypass list alone is no proxy
    path = write_seed(tmp_path, [conversation("c1", "hello")])
    with refusing_url() as url:
        code, out, _ = run("seed", path, "--dry-run", "--base-url", url)
    assert code == 0
    assert f"Warning: nothing can be sent: cannot reach {url}: Connection refused" in out


def test_an_option_on_the_wrong_side_of_the_command_says_where_it_goes():
    code, out, err = run("--dry-run", "seed", SAMPLE)
    assert code == 2 and out == ""
    first, usage = err.split("\n", 1)
    assert first == "error: --dry-run is an option of seed: put it after `seed FILE`"
    assert usage.startswith("usage: python -m memori_nb seed ")
    code, _, err = run("--db=x.duckdb", "seed", SAMPLE)
    assert err.startswith("error: --db is an option of seed: put it after `seed FILE`\n")
    code, out, err = run("seed", SAMPLE, "--version")
    assert code == 2 and out == ""
    first, usage = err.split("\n", 1)
    assert first == ("error: --version goes before the command: python -m memori_nb "
                     "--version")
    assert usage.startswith("usage: python -m memori_nb [-h] [--version]")
    # a mistyped option still gets its suggestion
    assert run("seed", SAMPLE, "--dryrun")[2].startswith(
        "error: unrecognized arguments: --dryrun (did you mean --dry-run?)\n")


def test_why_a_run_stopped_is_said_in_the_clis_words(tmp_path, monkeypatch):
    from helpers import API_KEY
    from memori_nb.testing import AugmentationServer

    monkeypatch.setenv("MEMORI_API_KEY", API_KEY)
    path = write_seed(tmp_path, [conversation("c1", "Hi."), conversation("c2", "Yo.")])
    with AugmentationServer(api_key=API_KEY) as server:
        # Not the augmentation endpoint: the 404 stops the run at once.
        code, out, _ = run("seed", path, "--db", str(tmp_path / "m.duckdb"), "--base-url",
                           server.url + "/nowhere", "--batch-size", "1")
    assert code == 1
    assert out.startswith("2 conversations in ") and "Seeded" not in out
    assert ": 0 succeeded, 2 skipped (not sent or already seeded). Database: " in out
    assert "The run stopped early: HTTP 404: " in out
    assert "check MEMORI_API_URL_BASE (or --base-url)" in out and "base_url=" not in out


def test_failures_the_cli_lists_are_in_its_words(tmp_path):
    import pandas as pd
    from types import SimpleNamespace

    from memori_nb.cli import _report
    from memori_nb.models import SeedResult

    result = SeedResult(run_id="r1", total=2, successful=0, failed=1, skipped=1,
                        total_triples=0, duration_ms=100,
                        stopped_reason="the service is gone; check OPENAI_BASE_URL (or "
                                       "base_url=)")
    failures = pd.DataFrame({"entity_id": ["u1"], "conversation_id": ["c1"],
                             "reason": ["refused; pass model= (or --model)"],
                             "error": ["conversation 'c1': refused"]})
    warnings = pd.DataFrame(columns=["entity_id", "conversation_id", "warning"])
    for as_json in (False, True):
        out, err = io.StringIO(), io.StringIO()
        _report(SimpleNamespace(json=as_json, db="m.duckdb"), result, failures, warnings, out,
                err)
        human = err.getvalue() if as_json else out.getvalue()
        assert "check OPENAI_BASE_URL (or --base-url)" in human
        assert "  u1 / c1: refused; pass --model\n" in human
        assert "=)" not in human and "model=" not in human
    assert json.loads(out.getvalue())["stopped_reason"].endswith("(or --base-url)")
