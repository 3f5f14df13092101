"""Overhead of the whole offline pipeline: `python -m memori_nb seed FILE --backend local`.

Writes two seed JSON files, then for each, in the same run and alternating, times:

- the floor: a fresh process that reads the file with ``json.load`` and appends all its
  messages to a new DuckDB table in one bulk insert;
- the CLI: a fresh process running ``python -m memori_nb seed FILE --backend local --db NEW``
  (loading, validating, chunking, extracting and storing everything).

It prints seconds, conversations per second and the CLI's ratio to the floor, per repeat, and
the CPU time of both processes (all threads: the CLI may use both cores). Both read bytecode
compiled beforehand (in a temporary folder), as an installed package does.

- ``uniform``: the issue's case: 100,000 ten-message conversations of about 600 characters,
  one entity (a lower bound on the per-conversation overhead: every conversation is small).
- ``realistic``: conversations shaped like real chat history (benchmarks/realistic.py,
  heavy-tailed sizes, many entities, timestamps), at a modest scale.

    python benchmarks/local_overhead.py [--conversations 100000] [--realistic 2000]
                                        [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from realistic import write_seed_file as write_realistic_seed_file

USER_LINES = ["I live in {city} and I work at {company}.", "I love {food}, honestly.",
              "I just bought a {thing}!", "Can you help me plan a trip to {city}?",
              "My sister's name is {name}.", "I'm planning to learn {skill} this year.",
              "What's the weather like tomorrow in {city}?", "I have a dog named {name}."]
ASSISTANT_LINES = [
    "Got it, thanks for telling me. That is useful to know for later, noted. Anything else?",
    "Sounds great! Here is a short plan you could follow over the next weeks, step by step.",
    "Sure, I can help with that. Let me know if you want more details on it, or examples."]
WORDS = {"city": ["Porto", "Oslo", "Lima", "Austin"], "company": ["Acme", "Globex", "Initech"],
         "food": ["ramen", "tacos", "dal"], "thing": ["bike", "Kindle", "espresso machine"],
         "name": ["Maya", "Rex", "Ola"], "skill": ["Rust", "pottery", "Spanish"]}

# The floor, run in its own process like the CLI (imports included in both); its store half
# (floor.append_messages) is the throughput benchmark's too.
FLOOR = """
import json, sys
from floor import append_messages
with open(sys.argv[1], "rb") as handle:
    document = json.load(handle)
append_messages(document if isinstance(document, list) else [document], sys.argv[2])
"""


def write_uniform_seed_file(path: Path, n: int) -> None:
    """``n`` ten-message conversations of about 600 characters, one entity."""
    rng = random.Random(7)
    conversations = []
    for c in range(n):
        messages = []
        for _ in range(5):
            fill = {k: rng.choice(v) for k, v in WORDS.items()}
            messages.append({"role": "user", "content": rng.choice(USER_LINES).format(**fill)})
            messages.append({"role": "assistant", "content": rng.choice(ASSISTANT_LINES)})
        conversations.append({"id": f"c{c}", "messages": messages})
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"entity_id": "user-1", "conversations": conversations}, handle)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of a fresh process (its output is discarded; a
    failure stops here). CPU time varies less than wall time on a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def compare(name: str, source: Path, conversations: int, folder: Path, repeats: int) -> None:
    here = Path(__file__).resolve().parent  # the floor imports floor.py from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])}
    # Both processes read bytecode compiled once, as an installed package's is: with
    # PYTHONDONTWRITEBYTECODE set (as on these machines) the CLI would otherwise compile all
    # of memori_nb's source in every run, and the floor's imports (json, duckdb, pandas) never.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder / "bytecode")
    timed([sys.executable, "-c", "import duckdb, pandas, memori_nb.cli"], env)
    size_mb = source.stat().st_size / 1e6
    print(f"{name}: {conversations:,} conversations, {size_mb:.0f} MB", flush=True)
    ratios = []
    for attempt in range(1, repeats + 1):
        floor_db, cli_db = folder / "floor.duckdb", folder / "cli.duckdb"
        for db in (floor_db, cli_db):
            db.unlink(missing_ok=True)
        floor, floor_cpu = timed([sys.executable, "-c", FLOOR, str(source), str(floor_db)],
                                 env)
        cli, cli_cpu = timed([sys.executable, "-m", "memori_nb", "seed", str(source),
                              "--backend", "local", "--db", str(cli_db)], env)
        ratios.append(cli / floor)
        print(f"  {attempt}: CLI {cli:6.2f} s = {conversations / cli:7,.0f} conv/s | floor "
              f"{floor:5.2f} s = {conversations / floor:7,.0f} conv/s | CLI/floor "
              f"{cli / floor:.2f}x | CPU {cli_cpu:5.1f} s vs {floor_cpu:4.1f} s = "
              f"{cli_cpu / floor_cpu:.2f}x (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"  CLI/floor {min(ratios):.2f}-{max(ratios):.2f}x over {repeats} repeats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000,
                        help="conversations in the uniform file (default 100,000)")
    parser.add_argument("--realistic", type=int, default=2_000,
                        help="conversations in the realistic file (default 2,000; 0 skips it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        uniform = folder / "uniform.json"
        write_uniform_seed_file(uniform, args.conversations)
        compare("uniform (10 messages, ~600 characters, one entity)", uniform,
                args.conversations, folder, args.repeats)
        uniform.unlink()
        if args.realistic:
            realistic = folder / "realistic.json"
            shape = write_realistic_seed_file(realistic, args.realistic, seed=0)
            messages, chars = shape["messages"], shape["chars"]
            compare(f"realistic ({shape['entities']:,} entities; median {messages['median']:g} "
                    f"messages and {chars['median']:,.0f} characters, p99 {messages['p99']:,} "
                    f"and {chars['p99']:,})", realistic, args.realistic, folder, args.repeats)


if __name__ == "__main__":
    main()
