"""The command line: ``python -m memori_nb seed FILE [options]``.

Exit codes: 0 every conversation seeded (or already seeded), 1 some failed or were left
unsent, 2 unusable input or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import IO

from .backends import BACKEND_NAMES
from .chunking import PlanRow, plan_seeds, total_plan
from .client import Memori
from .errors import MemoriNbError
from .models import DEFAULT_BATCH_SIZE, SeedConfig, SeedData, SeedResult
from .progress import TqdmProgress
from .sources import load_seed_file
from .store import DEFAULT_DB
from .validation import duplicate_reason, find_duplicate_ids

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_LISTED = 20


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and sys.exit(2)
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m memori_nb",
                     description="Seed historical conversations into a memory store.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    seed = commands.add_parser("seed", help="seed a conversations file",
                               description="Seed a seed JSON file: {\"entity_id\", "
                                           "\"process_id\"?, \"conversations\": [...]} "
                                           "(or a list of such objects).")
    seed.add_argument("file", help="the seed JSON file")
    seed.add_argument("--dry-run", action="store_true",
                      help="validate and print the plan; send nothing")
    seed.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                      metavar="N", help=f"requests in flight at once (default "
                                        f"{DEFAULT_BATCH_SIZE})")
    seed.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                      help=f"DuckDB database file (default {DEFAULT_DB})")
    seed.add_argument("--backend", choices=BACKEND_NAMES, default="memori",
                      help="augmentation backend: memori (needs MEMORI_API_KEY) or local "
                           "(offline); default memori")
    seed.add_argument("--force", action="store_true",
                      help="send again conversations already seeded with the same content")
    seed.add_argument("--json", action="store_true",
                      help="print the summary as one JSON object on stdout")
    return parser


def main(argv: list[str] | None = None, *, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=err)
        print(parser.format_usage().rstrip(), file=err)
        return EXIT_USAGE
    if args.command != "seed":
        parser.print_help(err)
        return EXIT_USAGE
    try:
        seeds = load_seed_file(args.file)
        config = SeedConfig(batch_size=args.batch_size)
        if args.dry_run:
            return _dry_run(args, seeds, config, out)
        return _seed(args, seeds, config, out, err)
    except MemoriNbError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: every conversation that finished is saved in "
              f"{args.db}; run the same command again to continue", file=err)
        return EXIT_INTERRUPTED


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _dry_run(args, seeds: list[SeedData], config: SeedConfig, out: IO[str]) -> int:
    rows = list(plan_seeds(seeds, config))
    totals = total_plan(rows)
    invalid = [r for r in rows if r.error]
    if args.json:
        document = {"dry_run": True, **{k: getattr(totals, k) for k in totals.__slots__},
                    "invalid_conversations": [
                        {"entity_id": r.entity_id, "conversation_id": r.conversation_id,
                         "error": r.error} for r in invalid],
                    "over_limit_conversations": [
                        {"entity_id": r.entity_id, "conversation_id": r.conversation_id,
                         "requests": r.requests} for r in rows if r.over_limit]}
        print(json.dumps(document), file=out)
    else:
        print(f"Plan for {args.file} (dry run: nothing is sent)", file=out)
        print(f"  entities       {totals.entities:,}", file=out)
        print(f"  conversations  {totals.conversations:,} ({totals.valid:,} valid, "
              f"{totals.invalid:,} invalid)", file=out)
        print(f"  messages       {totals.messages:,}", file=out)
        print(f"  characters     {totals.characters:,} (about {totals.estimated_tokens:,} "
              f"tokens)", file=out)
        print(f"  requests       {totals.requests:,} after chunking (at most "
              f"{config.max_messages_per_request:,} messages and "
              f"{config.max_chars_per_request:,} characters each)", file=out)
        print(f"  over a limit   {totals.over_limit:,} conversations", file=out)
        _list(out, "Over a limit (split into several requests):",
              [f"{r.entity_id} / {r.conversation_id}: {r.messages:,} messages, "
               f"{r.characters:,} characters -> {r.requests} requests"
               for r in rows if r.over_limit and not r.error])
        _list(out, "Invalid (would fail):", [_row_error(r) for r in invalid])
    return EXIT_FAILURES if invalid else EXIT_OK


def _seed(args, seeds: list[SeedData], config: SeedConfig, out: IO[str], err: IO[str]) -> int:
    memori = Memori(conn=args.db, backend=args.backend)
    try:
        # Before anything is sent: a missing key stops here, and duplicates are listed.
        memori.backend_ready()
        duplicates = [duplicate_reason(cid, where) for seed in seeds
                      for cid, where in find_duplicate_ids(seed.conversations).items()]
        _list(err, "Duplicate conversation ids (these conversations will fail):", duplicates)
        progress = TqdmProgress("seeding", file=err, notebook=False)
        result = asyncio.run(memori.seed(seeds, seed_config=config, force=args.force,
                                         progress=progress))
    finally:
        memori.close()
    _report(args, result, out, err)
    return EXIT_OK if result.failed == 0 and not result.stopped_reason else EXIT_FAILURES


def _report(args, result: SeedResult, out: IO[str], err: IO[str]) -> None:
    human = err if args.json else out
    seconds = result.duration_ms / 1000
    print(f"Seeded {result.total:,} conversations in {seconds:.1f} s: "
          f"{result.successful:,} succeeded, {result.failed:,} failed, "
          f"{result.skipped:,} skipped; {result.total_triples:,} triples. "
          f"Database: {args.db} (run {result.run_id}).", file=human)
    if result.stopped_reason:
        print(f"The run stopped early: {result.stopped_reason}. Conversations not sent are "
              f"skipped; run the same command later to send them.", file=human)
    _list(human, "Failed:", [f"{r.entity_id} / {r.conversation_id}: {r.error}"
                             for r in result.results if r.status == "failed"])
    if args.json:
        print(json.dumps(result.summary_dict()), file=out)


def _row_error(row: PlanRow) -> str:
    return f"{row.entity_id} / {row.conversation_id}: {row.error}"


def _list(stream: IO[str], title: str, lines: list[str]) -> None:
    if not lines:
        return
    print(title, file=stream)
    for line in lines[:MAX_LISTED]:
        print(f"  {line}", file=stream)
    if len(lines) > MAX_LISTED:
        print(f"  ... and {len(lines) - MAX_LISTED:,} more", file=stream)
