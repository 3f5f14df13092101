"""A window of requests larger than the process's open-file limit is refused before anything
is sent (in a subprocess: the limit is lowered there, never in the test process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import API_KEY, conversation
from memori_nb.testing import AugmentationServer

resource = pytest.importorskip("resource")  # Windows has no open-file limit to read

LIMIT = 256


def lowered_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def run_limited(argv, **env):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, preexec_fn=lowered_limit)


def seed_file(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u1", "conversations": [
        conversation(f"c{i}", f"I live in City{i}.") for i in range(20)]}))
    return str(path)


def test_the_cli_refuses_a_batch_size_over_the_open_file_limit(tmp_path):
    db = tmp_path / "m.duckdb"
    with AugmentationServer() as server:
        proc = run_limited(["-m", "memori_nb", "seed", seed_file(tmp_path), "--db", str(db),
                            "--batch-size", "1000", "--base-url", server.url],
                           MEMORI_API_KEY=API_KEY)
        assert server.request_count == 0
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "error: --batch-size 1000 keeps up to 1000 connections open, but this process may "
        "open only 256 files (its open-file limit), some 64 of them for the store, the "
        "journal and the rest: use --batch-size 192 or less, or raise the limit "
        "(ulimit -n 1064 in the shell that starts the run)\n")
    assert not db.exists()


def test_an_offline_backend_may_use_a_large_batch_size(tmp_path):
    proc = run_limited(["-m", "memori_nb", "seed", seed_file(tmp_path), "--db",
                        str(tmp_path / "m.duckdb"), "--batch-size", "1000", "--backend",
                        "local"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Seeded 20 conversations")


def test_the_python_api_refuses_it_before_sending(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, sys
        from memori_nb import ConfigurationError, Memori, SeedConfig, SeedData
        from memori_nb.engine import seed_all
        from memori_nb.stores import DuckDBStore
        seed = SeedData.for_conversations(entity_id="u1", conversations=[
            {{"id": "a", "messages": [{{"role": "user", "content": "I live in Oslo."}}]}}])
        m = Memori(conn=sys.argv[1], api_key={API_KEY!r}, base_url=sys.argv[2])
        try:
            asyncio.run(m.seed(seed, batch_size=300, progress=False))
        except ConfigurationError as exc:
            print(exc)
        try:  # the engine itself, as a distributed worker calls it
            asyncio.run(seed_all([seed], backend=m.backend, store=DuckDBStore(":memory:"),
                                 config=SeedConfig(batch_size=300)))
        except ConfigurationError as exc:
            print(exc)
    """)
    db = tmp_path / "m.duckdb"
    with AugmentationServer() as server:
        proc = run_limited(["-c", script, str(db), server.url])
        assert server.request_count == 0
    message = ("batch_size=300 keeps up to 300 connections open, but this process may open "
               "only 256 files (its open-file limit), some 64 of them for the store, the "
               "journal and the rest: use batch_size=192 or less, or raise the limit "
               "(ulimit -n 364 in the shell that starts the run)\n")
    assert proc.stdout == message * 2, proc.stderr
    assert not db.exists()
