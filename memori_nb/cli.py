"""The command line: ``python -m memori_nb seed FILE [options]``.

Exit codes: 0 every conversation seeded (or already seeded), 1 some failed or were left
unsent or the database cannot be used, 2 unusable input or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import re
import signal
import sys
from collections.abc import Iterable
from dataclasses import replace
from typing import IO, Any

from ._interpreter import input_set_aside
from ._version import __version__
from .backends import BACKEND_NAMES, resolve_backend
from .chunking import PlanRow
from .client import Memori
from .errors import ConfigurationError, MemoriNbError, StoreError
from .models import DEFAULT_BATCH_SIZE, SeedConfig, SeedData, SeedResult, short_reason
from .pricing import COMPLETION_TOKENS_PER_REQUEST, format_cost, pricing_of
from .plan import Plan, plan
from .progress import TqdmProgress
from .sources import FORMATS, to_seeds
from .stores import DEFAULT_DB
from .stores.connection import hide_password
from .validation import count_warnings, duplicate_reason, find_duplicate_ids
from .wording import describe_seed_result, plural

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_LISTED = 20
MAX_IN_JSON = 1000


class _UsageError(Exception):
    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.parser = parser  # whose usage to show: the command's, not the top level's


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and sys.exit(2)
        raise _UsageError(message, self)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m memori_nb",
                     description="Seed historical conversations into a memory store.")
    # Handled in main rather than by argparse's version action, which prints to sys.stdout.
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    seed = commands.add_parser(
        "seed", help="seed a conversations file",
        description="Seed conversations from a file: the seed JSON format ({\"entity_id\", "
                    "\"process_id\"?, \"conversations\": [...]}, or a list of such objects), "
                    "JSONL, Parquet or CSV (one row per message), or a ChatGPT or Claude.ai "
                    "data export (conversations.json, a folder of them, or the export's zip).")
    # So that main can show seed's usage for arguments seed does not know.
    seed.set_defaults(command_parser=seed)
    seed.add_argument("file", help="the file to read (its format is detected)")
    seed.add_argument("--format", choices=FORMATS, default=None,
                      help="the file's format, when detection is not wanted")
    seed.add_argument("--entity-id", default=None, metavar="ID",
                      help="whose conversations these are, for files that do not say "
                           "(chat exports, JSONL/CSV/Parquet without an entity column)")
    columns = seed.add_argument_group(
        "columns", "for Parquet/CSV files in long format whose columns have other names")
    for name, default in (("entity", "entity_id"), ("conversation", "conversation_id"),
                          ("role", "role"), ("content", "content"), ("timestamp", "timestamp"),
                          ("messages", "messages")):
        columns.add_argument(f"--{name}-col", default=None, metavar="NAME",
                             help=f"the {name} column (default {default})")
    reading = seed.add_argument_group("reading", "how the file's values are read")
    order = reading.add_mutually_exclusive_group()
    order.add_argument("--dayfirst", action="store_true", default=None,
                       help="numeric dates are day/month/year (12.01.2024 is 12 January)")
    order.add_argument("--monthfirst", action="store_false", dest="dayfirst", default=None,
                       help="numeric dates are month/day/year (12/01/2024 is 1 December)")
    reading.add_argument("--timestamp-format", default=None, metavar="FORMAT",
                         help="a strptime format every timestamp follows, e.g. "
                              "'%%d.%%m.%%Y, %%H:%%M:%%S'")
    reading.add_argument("--role-map", type=_role_map, default=None, metavar="NAME=ROLE,...",
                         help="more role names: e.g. agent=assistant,customer=user; "
                              "ROLE 'skip' leaves such messages out")
    seed.add_argument("--dry-run", action="store_true",
                      help="validate and print the plan; send nothing")
    seed.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                      metavar="N", help=f"requests in flight at once (default "
                                        f"{DEFAULT_BATCH_SIZE})")
    seed.add_argument("--db", default=DEFAULT_DB, metavar="PATH_OR_URL",
                      help=f"a DuckDB database file (default {DEFAULT_DB}), or a database URL "
                           f"(sqlite:///memori.db, postgresql+psycopg://...) to seed Memori's "
                           f"own tables there")
    seed.add_argument("--backend", choices=BACKEND_NAMES, default="memori",
                      help="augmentation backend: memori (needs MEMORI_API_KEY), openai (a "
                           "chat model on any OpenAI-compatible server; key from "
                           "OPENAI_API_KEY) or local (offline); default memori")
    service = seed.add_argument_group(
        "backend", "where requests go; all but --base-url are for --backend openai")
    service.add_argument("--base-url", default=None, metavar="URL",
                         help="the service's base URL (default MEMORI_API_URL_BASE, or "
                              "OPENAI_BASE_URL, else https://api.openai.com/v1)")
    service.add_argument("--model", default=None, metavar="NAME",
                         help="the chat model (default OPENAI_MODEL)")
    service.add_argument("--temperature", type=float, default=None, metavar="T",
                         help="sampling temperature (default 0)")
    service.add_argument("--max-tokens", type=_positive_int, default=None, metavar="N",
                         help="the longest answer in tokens (default 2048)")
    service.add_argument("--header", type=_header, action="append", default=None,
                         metavar="NAME:VALUE", help="an extra request header (repeatable)")
    service.add_argument("--rpm", type=_positive_float, default=None, metavar="N",
                         help="at most N requests per minute")
    service.add_argument("--tpm", type=_positive_float, default=None, metavar="N",
                         help="at most N tokens per minute (estimated, then counted)")
    service.add_argument("--prompt-price", type=_price, default=None, metavar="USD",
                         help="USD per million prompt tokens (with --completion-price)")
    service.add_argument("--completion-price", type=_price, default=None, metavar="USD",
                         help="USD per million completion tokens (with --prompt-price)")
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
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # argparse reports these from the top level; the command's usage is the helpful one.
            _refuse_unknown(getattr(args, "command_parser", parser), unknown, top=parser)
    except _UsageError as exc:
        print(f"error: {exc}", file=err)
        print(exc.parser.format_usage().rstrip(), file=err)
        return EXIT_USAGE
    if args.version:
        print(f"memori_nb {__version__}", file=out)
        return EXIT_OK
    if args.command != "seed":
        parser.print_help(err)
        return EXIT_USAGE
    try:
        table_options = {f"{name}_col": getattr(args, f"{name}_col") for name in (
            "entity", "conversation", "role", "content", "timestamp", "messages")
            if getattr(args, f"{name}_col") is not None}
        read = lambda: to_seeds(  # noqa: E731
            args.file, format=args.format, entity_id=args.entity_id, dayfirst=args.dayfirst,
            timestamp_format=args.timestamp_format, role_map=args.role_map, **table_options)
        with input_set_aside(read) as seeds:
            config = SeedConfig(batch_size=args.batch_size)
            if args.dry_run:
                return _dry_run(args, seeds, config, out, backend=_estimating_backend(args))
            return _seed(args, seeds, config, out, err)
    except StoreError as exc:
        print(f"error: {_cli_wording(exc)}", file=err)
        return EXIT_FAILURES
    except MemoriNbError as exc:
        print(f"error: {_cli_wording(exc)}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: every conversation that finished is saved in "
              f"{hide_password(str(args.db))}; run the same command again to continue",
              file=err)
        return EXIT_INTERRUPTED


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str], *,
                    top: argparse.ArgumentParser | None = None) -> None:
    """Raise the usage error for arguments ``parser`` does not know. An option given on the
    wrong side of the command says where it goes (``--dry-run`` after ``seed FILE``,
    ``--version`` before the command); a mistyped one gets the option it was probably meant
    to be (``--dryrun``: ``--dry-run``)."""
    if top is not None:
        _refuse_misplaced(parser, unknown, top)
    options = _options(parser)
    guesses = [match for given in unknown if given.startswith("-")
               for match in difflib.get_close_matches(given.split("=", 1)[0], options, n=1)]
    hint = f" (did you mean {' or '.join(dict.fromkeys(guesses))}?)" if guesses else ""
    parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _refuse_misplaced(parser: argparse.ArgumentParser, unknown: list[str],
                      top: argparse.ArgumentParser) -> None:
    """The usage error for the first of ``unknown`` that is an option of the other level:
    the top level's options go before the command, a command's after it (argparse leaves
    them unknown there, and a guess among ``parser``'s own options would mislead)."""
    commands = {name: sub for action in top._actions
                if isinstance(action, argparse._SubParsersAction)
                for name, sub in action.choices.items()}
    for name in (given.split("=", 1)[0] for given in unknown if given.startswith("-")):
        if parser is not top and name in _options(top):
            top.error(f"{name} goes before the command: {top.prog} {name}")
        for command, sub in commands.items():
            # Unknown although the command has it: it was given before the command.
            if name in _options(sub) and name not in _options(top):
                where = " ".join([command] + [action.metavar or action.dest.upper()
                                              for action in sub._actions
                                              if not action.option_strings])
                sub.error(f"{name} is an option of {command}: put it after `{where}`")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


# Python keywords in library messages -> what a CLI user types instead. (The CLI takes no
# key on the command line: it would show in ps and shell history.)
_CLI_WORDS = ((" (or pass api_key=)", ""), (" or api_key=)", ")"),
              ("(backend='local', or --backend local)", "(--backend local)"),
              ("base_url=", "--base-url"), ("pass model= (or --model)", "pass --model"),
              ("batch_size=", "--batch-size "))
_ROLE_MAP_HINT = re.compile(r"role_map=\{'([^']*)': '(\w+)'\}")


def _cli_wording(message: MemoriNbError | str) -> str:
    """A library message as a CLI user should read it: flags and environment variables
    rather than the keyword arguments the Python-facing message names."""
    text = str(message)
    for python, cli in _CLI_WORDS:
        text = text.replace(python, cli)
    # "map it with role_map={'robot': 'user'}" -> "map it with --role-map robot=user"
    return _ROLE_MAP_HINT.sub(lambda m: f"--role-map {m[1]}={m[2]}", text)


def run_until_signal(coroutine: Any) -> Any:
    """Run ``coroutine`` to the end; Ctrl-C or SIGTERM (``docker stop``, a CI time-out)
    stops it cleanly: the run is cancelled once, saves what finished, and
    KeyboardInterrupt is raised. Further signals while it saves are ignored, so a second
    Ctrl-C cannot cut the saving short."""
    async def main() -> Any:
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        received: list[str] = []

        def stop(name: str) -> None:
            if not received:
                received.append(name)
                task.cancel()

        watched = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop, sig.name)
                watched.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no such signal here: the default applies
        try:
            return await coroutine
        except asyncio.CancelledError:
            if received:
                raise KeyboardInterrupt(received[0]) from None
            raise
        finally:
            for sig in watched:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a price in USD, got {text!r}")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a price >= 0 in USD, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        # The value is not echoed: headers often carry secrets.
        raise argparse.ArgumentTypeError("expected NAME:VALUE, e.g. OpenAI-Organization:org-1")
    return name.strip(), value.strip()


# --flag -> the openai backend's option.
_OPENAI_FLAGS = {"model": "model", "temperature": "temperature", "max_tokens": "max_tokens",
                 "header": "headers", "rpm": "requests_per_minute",
                 "tpm": "tokens_per_minute", "prompt_price": "prompt_price",
                 "completion_price": "completion_price"}


def _backend_options(args) -> dict[str, Any]:
    """The openai backend's options from the flags given (a ConfigurationError naming a
    flag given with another backend)."""
    given = {flag: getattr(args, flag) for flag in _OPENAI_FLAGS
             if getattr(args, flag) is not None}
    if args.backend != "openai":
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise ConfigurationError(f"{flag} is for --backend openai (the backend is "
                                     f"{args.backend})")
        return {}
    options = {_OPENAI_FLAGS[flag]: value for flag, value in given.items()}
    if "headers" in options:
        options["headers"] = dict(options["headers"])
    return options


def _role_map(text: str) -> dict[str, str | None]:
    mapping: dict[str, str | None] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        name, sep, role = pair.partition("=")
        if not sep or not name.strip() or role.strip() not in ("user", "assistant", "system",
                                                                "skip"):
            raise argparse.ArgumentTypeError(
                f"expected NAME=ROLE pairs with ROLE one of user, assistant, system, skip; "
                f"got {pair!r}")
        mapping[name.strip()] = None if role.strip() == "skip" else role.strip()
    return mapping


def _estimating_backend(args) -> Any:
    """The backend the run would use, for the dry run's token and cost estimate (its prompt
    overhead and prices). Making it sends nothing and needs no key; settings the run would
    refuse (ConfigurationError) are refused here too."""
    return resolve_backend(args.backend, base_url=args.base_url, **_backend_options(args))


def _dry_run(args, seeds: Iterable[SeedData], config: SeedConfig, out: IO[str], *,
             backend: Any = None) -> int:
    """Print the plan (``--json``: as one object) without sending anything: what the
    database's ledger already holds, what is left to send and what it takes, for a backend
    that bills by token the tokens and cost (estimates: see :func:`memori_nb.plan`), and
    what would stop the run (no API key)."""
    db = getattr(args, "db", None)
    the_plan = plan(seeds, db=db, backend=backend, seed_config=config,
                    force=bool(getattr(args, "force", False)), reach=True)
    stats = the_plan.stats
    invalid = stats[stats["status"] == "invalid"].head(MAX_IN_JSON)
    oversized = stats[(stats["status"] == "to_send") & stats["over_limit"]].head(MAX_IN_JSON)
    if args.json:
        tokens = ({"estimated_prompt_tokens": the_plan.prompt_tokens,
                   "estimated_completion_tokens": the_plan.completion_tokens,
                   "estimated_cost": the_plan.cost}
                  if the_plan.prompt_tokens is not None else {})
        document = {"dry_run": True, "entities": the_plan.entities,
                    "conversations": the_plan.conversations,
                    "valid": the_plan.conversations - the_plan.invalid,
                    "invalid": the_plan.invalid, "to_send": the_plan.to_send,
                    "already_seeded": the_plan.already_seeded,
                    "messages": the_plan.messages, "characters": the_plan.characters,
                    "estimated_tokens": the_plan.estimated_tokens,
                    "requests": the_plan.requests, "over_limit": the_plan.over_limit,
                    **tokens, "eta_seconds": the_plan.eta_seconds,
                    "latency_assumed": the_plan.latency, "batch_size": the_plan.batch_size,
                    "plan_warnings": [_cli_wording(w) for w in the_plan.warnings],
                    "warnings": the_plan.validation_warnings,
                    "warning_examples": the_plan.validation_warning_examples,
                    "invalid_conversations": [
                        {"entity_id": r.entity_id, "conversation_id": r.conversation_id,
                         "error": r.error} for r in invalid.itertuples()],
                    "over_limit_conversations": [
                        {"entity_id": r.entity_id, "conversation_id": r.conversation_id,
                         "requests": r.requests} for r in oversized.itertuples()]}
        print(json.dumps(document), file=out)
    else:
        p = the_plan
        print(f"Plan for {args.file} (dry run: nothing is sent)", file=out)
        if db is not None:
            print(f"  database       {hide_password(str(db))}", file=out)
        print(f"  entities       {p.entities:,}", file=out)
        print(f"  conversations  {p.conversations:,}: {p.to_send:,} to send, "
              f"{p.already_seeded:,} already seeded, {p.invalid:,} invalid", file=out)
        print(f"  messages       {p.messages:,} to send", file=out)
        print(f"  characters     {p.characters:,} (about "
              f"{plural(p.estimated_tokens, 'token')})", file=out)
        print(f"  requests       {p.requests:,} after chunking (at most "
              f"{config.max_messages_per_request:,} messages and "
              f"{config.max_chars_per_request:,} characters each)", file=out)
        print(f"  over a limit   {plural(p.over_limit, 'conversation')}", file=out)
        if p.prompt_tokens is not None:
            _print_estimate(out, p, pricing_of(backend))
        if p.to_send:
            print(f"  time           {p.describe_eta()}", file=out)
        elif p.conversations and p.already_seeded == p.conversations:
            print(f"Nothing to send: all {p.already_seeded:,} already seeded "
                  f"(--force sends them again).", file=out)
        for warning in p.warnings:
            print(f"Warning: {_cli_wording(warning)}", file=out)
        _list(out, "Over a limit (split into several requests):",
              [f"{r.entity_id} / {r.conversation_id}: {r.messages:,} messages, "
               f"{r.characters:,} characters -> {r.requests} requests"
               for r in oversized.head(MAX_LISTED).itertuples()], p.over_limit)
        _list(out, "Invalid (would fail):",
              [f"{r.entity_id} / {r.conversation_id}: "
               f"{_cli_wording(short_reason(r.error, r.conversation_id))}"
               for r in invalid.head(MAX_LISTED).itertuples()], p.invalid)
        _warnings_table(out, p.validation_warnings, p.validation_warning_examples)
    return EXIT_FAILURES if the_plan.invalid else EXIT_OK


def _print_estimate(out: IO[str], the_plan: Plan, pricing: Any) -> None:
    """The dry run's token (and cost) estimate for the conversations to send, saying how it
    was made."""
    print(f"  prompt tokens  about {the_plan.prompt_tokens:,} (characters / 4, with the "
          f"backend's instructions in each request)", file=out)
    print(f"  completion     about {the_plan.completion_tokens:,} tokens (an allowance of "
          f"{COMPLETION_TOKENS_PER_REQUEST:,} per request)", file=out)
    if the_plan.cost is not None:
        print(f"  cost           about {format_cost(the_plan.cost)} (at "
              f"${pricing.prompt_per_million:g} prompt / ${pricing.completion_per_million:g} "
              f"completion per million tokens)", file=out)
    else:
        print("  cost           unknown: the backend has no prices per million tokens",
              file=out)


def _warnings_table(out: IO[str], counts: dict[str, int],
                    examples: dict[str, list[str]]) -> None:
    """What was left out or repaired, by kind, with a few conversations of each."""
    if not counts:
        return
    print("Warnings (the conversations were kept; see the results' warnings column):",
          file=out)
    width = max(len(kind) for kind in counts)
    for kind, n in counts.items():
        shown = ", ".join(examples.get(kind, []))
        print(f"  {kind:<{width}}  {n:>7,}  {shown}", file=out)


def _seed(args, seeds: Iterable[SeedData], config: SeedConfig, out: IO[str],
          err: IO[str]) -> int:
    memori = Memori(conn=args.db, backend=args.backend, base_url=args.base_url,
                    **_backend_options(args))
    try:
        memori.backend_ready(config)  # before the duplicates are listed (and any file is made)
        # Before anything is sent, duplicates are listed (for a streamed file they are
        # reported as the run reaches them).
        if isinstance(seeds, list):
            duplicates = [duplicate_reason(cid, where) for seed in seeds
                          for cid, where in find_duplicate_ids(seed.conversations).items()]
            _list(err, "Duplicate conversation ids (these conversations will fail):",
                  duplicates)
        # The summary line is the report's, on stdout.
        progress = TqdmProgress("seeding", file=err, notebook=False, summary=False)
        # Results stay in DuckDB rather than in memory: files may hold millions.
        result = run_until_signal(memori.seed(seeds, seed_config=config, force=args.force,
                                              progress=progress, keep_results=False))
        failures = memori.store.failures(result.run_id, limit=MAX_LISTED)
        warnings = memori.store.warnings(result.run_id)
    finally:
        memori.close()
    _report(args, result, failures, warnings, out, err)
    return EXIT_OK if result.failed == 0 and not result.stopped_reason else EXIT_FAILURES


def _report(args, result: SeedResult, failures, warnings, out: IO[str], err: IO[str]) -> None:
    """The run's summary, its failures and warnings, in the CLI's words (flags and
    environment variables, not Python keywords); ``--json``: the summary as JSON on stdout
    and the rest on stderr."""
    human = err if args.json else out
    # Why the run stopped is the library's message: reworded like every other one the CLI
    # prints ("check OPENAI_BASE_URL (or --base-url)", not "base_url=").
    said = replace(result, stopped_reason=_cli_wording(result.stopped_reason)) \
        if result.stopped_reason else result
    print(describe_seed_result(said, suffix=f". Database: {hide_password(str(args.db))} "
                                            f"(run {result.run_id})") + ".", file=human)
    if result.stopped_reason:
        print("Conversations not sent are skipped; run the same command later to send them.",
              file=human)
    # The short reason: the line already names the conversation (rows of an earlier
    # version have only the error).
    _list(human, "Failed:", [f"{r.entity_id} / {r.conversation_id}: " + _cli_wording(
                                 r.reason if isinstance(r.reason, str) else r.error)
                             for r in failures.itertuples()], result.failed)
    counts, examples = count_run_warnings(warnings)
    _warnings_table(human, counts, examples)
    if args.json:
        print(json.dumps({**said.summary_dict(), "warnings": counts}), file=out)


def count_run_warnings(warnings) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Warnings of a run (a frame of entity_id, conversation_id, warning) by kind."""
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for row in warnings.itertuples(index=False):
        for kind, n in count_warnings([row.warning]).items():
            counts[kind] = counts.get(kind, 0) + n
            shown = examples.setdefault(kind, [])
            if len(shown) < 3:
                shown.append(f"{row.entity_id} / {row.conversation_id}")
    return dict(sorted(counts.items(), key=lambda item: -item[1])), examples


def _row_error(row: PlanRow) -> str:
    return f"{row.entity_id} / {row.conversation_id}: {row.error}"


def _list(stream: IO[str], title: str, lines: list[str], total: int | None = None) -> None:
    """Print up to MAX_LISTED lines under a title, and how many more there are."""
    total = len(lines) if total is None else total
    if not total:
        return
    print(title, file=stream)
    for line in lines[:MAX_LISTED]:
        print(f"  {line}", file=stream)
    if total > MAX_LISTED:
        print(f"  ... and {total - MAX_LISTED:,} more", file=stream)
