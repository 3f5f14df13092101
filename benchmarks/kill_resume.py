"""Kill a CLI run with SIGKILL at several moments, run it again, and count what was billed
twice and what was lost.

For each kill point: a fresh DuckDB file, the CLI seeding realistic conversations against the
loopback augmentation server (log-normal latency), ``kill -9`` after the given seconds, then
the same command again to the end. The server sees every request, so it tells which
conversations were sent in both runs. The bound to compare with: the requests in flight at
the kill (at most ``--batch-size``). "stored" and "journaled" say where what the killed run
finished was: committed to the store, or only in its write-ahead journal (which the re-run
stores before it reads the ledger).

    python benchmarks/kill_resume.py [--conversations 600] [--batch-size 20] [--at 1 2 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from realistic import write_seed_file

from memori_nb.stores.journal import _read_segments, journal_beside
from memori_nb.testing import AugmentationServer, lognormal_latency

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789"


def conversation_of(body: dict) -> str:
    """Which conversation a request belongs to: its first message (unique here) and entity."""
    messages = body["conversation"]["messages"]
    first = f"{body['meta']['attribution']['entity']['id']}\x00{messages[0]['content']}"
    return hashlib.sha256(first.encode("utf-8", "surrogatepass")).hexdigest()


def finished_in_journal(db: Path) -> set[tuple[str, str]]:
    """(entity, conversation) of what the killed run's journal says finished (read as the
    next run replays it: a line the kill cut short does not count)."""
    segments = sorted(journal_beside(str(db)).glob("*.jsonl"))
    finished, _ = _read_segments(segments)
    return {(entity, conversation) for entity, conversation, _ in finished}


def start_cli(seed_file: Path, db: Path, server: AugmentationServer, batch: int,
              stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
    """``python -m memori_nb seed`` against the loopback server, in its own process."""
    env = {**os.environ, "MEMORI_API_KEY": KEY, "MEMORI_API_URL_BASE": server.url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "memori_nb", "seed", str(seed_file), "--db",
                             str(db), "--batch-size", str(batch)], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The input and window options the fault benchmarks share."""
    parser.add_argument("--conversations", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.05,
                        help="size of the conversations (1 = full realistic sizes)")


def run_cli(seed_file: Path, db: Path, server: AugmentationServer, batch: int,
            kill_after: float | None) -> int:
    proc = start_cli(seed_file, db, server, batch)
    if kill_after is None:
        return proc.wait()
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--at", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="seconds after the start at which to kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    seed_file = work / "seed.json"
    write_seed_file(seed_file, args.conversations, scale=args.scale)
    print(f"{args.conversations:,} conversations, batch {args.batch_size}, latency log-normal "
          f"median 0.1 s sigma 0.6")
    print(f"{'kill at':>8} {'sent 1st':>9} {'stored':>7} {'journaled':>10} "
          f"{'billed twice':>13} {'in-flight bound':>16} {'lost':>5} {'runs left running':>18}")
    for at in args.at:
        db = work / f"kill-{at}.duckdb"
        with AugmentationServer(api_key=KEY, latency=lognormal_latency(0.1, 0.6, seed=1)) \
                as server:
            run_cli(seed_file, db, server, args.batch_size, at)
            first = server.request_count
            first_run = {conversation_of(r.body) for r in server.requests if r.body}
            with duckdb.connect(str(db)) as conn:
                try:
                    stored = set(conn.execute("SELECT entity_id, conversation_id FROM "
                                              "seeded_conversations").fetchall())
                except duckdb.CatalogException:
                    stored = set()  # killed before the tables were made
            journaled = finished_in_journal(db) - stored
            code = run_cli(seed_file, db, server, args.batch_size, None)
            second = [conversation_of(r.body) for r in server.requests[first:] if r.body]
        with duckdb.connect(str(db)) as conn:
            total = conn.execute("SELECT count(*) FROM seeded_conversations").fetchone()[0]
            running = conn.execute("SELECT count(*) FROM runs WHERE status = 'running'"
                                   ).fetchone()[0]
        twice = len(first_run & set(second))
        print(f"{at:>7.1f}s {first:>9,} {len(stored):>7,} {len(journaled):>10,} {twice:>13,} "
              f"{args.batch_size:>16,} "
              f"{args.conversations - total:>5,} {running:>18,}   (re-run exit {code})")


if __name__ == "__main__":
    main()
