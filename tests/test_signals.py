"""SIGTERM and Ctrl-C stop a CLI run cleanly: what finished is saved, the store says so, and
a second signal while it saves loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from helpers import API_KEY, conversation
from memori_nb.testing import AugmentationServer

ROOT = Path(__file__).resolve().parents[1]


def start_cli(tmp_path, server, n=400):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u1", "conversations": [
        conversation(f"c{i}", f"I live in City{i}.") for i in range(n)]}))
    env = {**os.environ, "MEMORI_API_KEY": API_KEY, "MEMORI_API_URL_BASE": server.url,
           "PYTHONPATH": str(ROOT)}
    db = tmp_path / "m.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "memori_nb", "seed", str(path), "--db",
                             str(db), "--batch-size", "10"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, db


def wait_for_requests(server, count, timeout=30):
    deadline = time.monotonic() + timeout
    while server.request_count < count:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.02)


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_a_signal_stops_the_run_cleanly_and_a_second_one_loses_nothing(tmp_path, signals):
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        proc, db = start_cli(tmp_path, server)
        wait_for_requests(server, 60)
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.03)
        _, err = proc.communicate(timeout=60)
        sent = server.request_count
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with duckdb.connect(str(db)) as conn:
        status = conn.execute("SELECT status FROM runs").fetchall()
        saved = conn.execute("SELECT count(*) FROM seeded_conversations").fetchone()[0]
    assert status == [("interrupted",)]
    # Everything sent finished and was saved, but the requests still in flight (at most 10).
    assert sent - 10 <= saved <= sent
