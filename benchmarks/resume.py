"""Resuming must be no slower than the first run: seed an interleaved JSONL file, then run the
same command again (everything is in the ledger, nothing is sent) and compare.

The file has one conversation per line, realistic sizes (``realistic.py``), and entities
interleaved in time order, as an export of a whole chat platform is: consecutive lines rarely
share an entity, so the reader makes one SeedData per line. Each run is the CLI in a fresh
process with the offline ``local`` backend. The floor printed beside: reading the file and
parsing every line with ``json.loads``.

    python benchmarks/resume.py [--conversations 50000] [--entities 1000] [--scale 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from realistic import generate_conversations

ROOT = Path(__file__).resolve().parents[1]


def write_interleaved(path: Path, n: int, entities: int, scale: float) -> None:
    """All conversations in the order of their first message's time, whoever owns them."""
    lines = [(conv["messages"][0]["timestamp"], seed["entity_id"], conv)
             for seed in generate_conversations(n, entities=entities, scale=scale)
             for conv in seed["conversations"]]
    lines.sort(key=lambda line: line[0])
    with open(path, "w", encoding="utf-8") as out:
        for _, entity, conv in lines:
            out.write(json.dumps({"entity_id": entity, **conv}, ensure_ascii=False) + "\n")


def timed_cli(path: Path, db: Path) -> tuple[float, dict]:
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "memori_nb", "seed", str(path), "--backend",
                           "local", "--db", str(db), "--json"], env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"the CLI failed:\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--scale", type=float, default=0.05,
                        help="size of the conversations (1 = full realistic sizes)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resume-"))
    path, db = work / "interleaved.jsonl", work / "m.duckdb"
    write_interleaved(path, args.conversations, args.entities, args.scale)
    started = time.perf_counter()
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            json.loads(line)
    floor = time.perf_counter() - started
    print(f"{args.conversations:,} lines, {args.entities:,} entities interleaved, "
          f"{path.stat().st_size / 1e6:.0f} MB; floor (read + json.loads): {floor:.2f} s")
    for name in ("first run", "resume"):
        seconds, summary = timed_cli(path, db)
        print(f"{name:>10}: {seconds:6.2f} s  ({seconds / floor:4.1f}x the floor)  "
              f"succeeded {summary['successful']:,}, skipped {summary['skipped']:,}")


if __name__ == "__main__":
    main()
