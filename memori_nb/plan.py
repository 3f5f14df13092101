"""The plan of a run, before anything is sent: what the ledger already holds, what is left to
send, what it will take (requests, tokens, cost, time) and what stands in the way.

:func:`plan` sizes every conversation as :func:`memori_nb.chunking_stats` does, asks the
database's ledger which were seeded before with the same content (the key the engine skips
them by: entity, conversation id and content hash), prices what is left with
:func:`memori_nb.pricing.estimate_requests`, and checks that the backend could send (its
``check_ready()``). It sends nothing and writes nothing: a database file that does not exist
yet is not created, and an existing database is only read (never built nor migrated). A
database without memori_nb's tables has an empty ledger; one that cannot be opened or read
(another process holds the DuckDB file, an unreachable server) is planned without its ledger,
with a warning saying so.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ._interpreter import paused_gc
from .backends import resolve_backend
from .backends.base import reachability_problem, readiness_problem
from .chunking import MAX_WARNING_EXAMPLES, PlanRow
from .errors import ConfigurationError, InvalidInputError, StoreError
from .models import SeedConfig, SeedData
from .pricing import (bills_by_token, describe_usage, estimate_requests, message_overhead_of,
                      pricing_of, prompt_overhead_of)
from .stats import config_of, plan_rows, seeds_of, stats_frame
from .stores import Store, open_store
from .stores.connection import is_sql_conn
from .validation import count_warnings, repeated_id_reason
from .wording import plural

__all__ = ["DEFAULT_LATENCY", "STATUSES", "Plan", "plan"]

#: Seconds a request is assumed to take (a network backend's round trip and the model's
#: answer), for the ETA: an assumption, not a measurement; pass ``latency=`` to change it.
DEFAULT_LATENCY = 2.0
#: Values of the ``status`` column of :attr:`Plan.stats`.
STATUSES = ("to_send", "already_seeded", "invalid")
# Keys asked of the ledger at once (a bounded query however large the input).
_LEDGER_WINDOW = 10_000
# What reading a database may raise (DuckDB's own errors for a table it lacks).
_READ_ERRORS = (StoreError, duckdb.Error)


@dataclass(frozen=True, kw_only=True, eq=False)
class Plan:
    """What a run would do, from :func:`plan`: counts, estimates and warnings.

    Attributes:
        conversations: conversations in the input.
        to_send, already_seeded, invalid: how many would be sent, skipped because the
            ledger holds them with the same content (0 with ``force``), and fail validation.
        entities: distinct entities.
        messages, characters, estimated_tokens, requests: what the conversations to send
            hold and take (requests after chunking; tokens are characters / 4).
        over_limit: conversations to send that are split into several requests.
        prompt_tokens, completion_tokens: the backend's estimate for the conversations to
            send (None for a backend that does not bill by token).
        cost: US dollars for them (None unless the backend's prices are known).
        batch_size: requests in flight at once.
        latency: seconds a request is assumed to take.
        longest: the most requests of one conversation to send.
        eta_seconds: ``max(ceil(requests / batch_size), longest) * latency`` (None for an
            offline backend, which waits on no network): a conversation's chunks are sent
            one after another, so one long conversation takes ``longest`` round trips however
            large the batch. An assumption, not a measurement.
        backend: the backend's name.
        force: whether conversations already seeded would be sent again.
        warnings: what stands in the way (no API key, ...), as sentences.
        validation_warnings, validation_warning_examples: what validation left out or
            repaired, by kind (counts, and a few ``entity / conversation`` of each).
        stats: one row per conversation, the columns of :func:`memori_nb.chunking_stats`
            and ``status`` (one of ``STATUSES``).
    """

    conversations: int
    to_send: int
    already_seeded: int
    invalid: int
    entities: int
    messages: int
    characters: int
    estimated_tokens: int
    requests: int
    over_limit: int
    longest: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    batch_size: int
    latency: float
    eta_seconds: float | None
    backend: str
    force: bool
    warnings: tuple[str, ...]
    validation_warnings: dict[str, int] = field(default_factory=dict)
    validation_warning_examples: dict[str, list[str]] = field(default_factory=dict)
    stats: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def lines(self) -> list[str]:
        """The plan in a few readable lines (what ``str(plan)`` joins)."""
        lines = [f"{plural(self.conversations, 'conversation')}: {self.to_send:,} to send, "
                 f"{self.already_seeded:,} already seeded, {self.invalid:,} invalid"]
        if not self.to_send:
            if self.conversations and self.already_seeded == self.conversations:
                lines.append(f"nothing to send: all {self.conversations:,} already seeded")
            else:
                lines.append("nothing to send")
        else:
            lines.append(f"to send: {plural(self.requests, 'request')}, about "
                         f"{plural(self.estimated_tokens, 'token')} "
                         f"({plural(self.messages, 'message')})")
            usage = describe_usage(self.prompt_tokens, self.completion_tokens, self.cost)
            if usage:
                lines.append(f"estimate: about {usage}"
                             + ("" if self.cost is not None else " (no prices: cost unknown)"))
            lines.append(f"time: {self.describe_eta()}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return lines

    def describe_eta(self) -> str:
        """``"about 10 s (5 requests, 8 at a time, 2.0 s each: assumed)"``; when one
        conversation's chunks, sent one after another, take longer than the rest, it says
        so: ``"... 8 at a time, the longest conversation's 300 one after another, ..."``."""
        if self.eta_seconds is None:
            return f"offline backend {self.backend!r}: no network round trips to wait for"
        serial = (f", the longest conversation's {self.longest:,} one after another"
                  if self.longest > math.ceil(self.requests / self.batch_size) else "")
        return (f"about {_duration(self.eta_seconds)} ({plural(self.requests, 'request')}, "
                f"{self.batch_size:,} at a time{serial}, {self.latency:g} s each: assumed)")

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return (f"<Plan {plural(self.conversations, 'conversation')}: {self.to_send:,} "
                f"to send, "
                f"{self.already_seeded:,} already seeded, {self.invalid:,} invalid>")

    def _repr_html_(self) -> str:
        rows = [("conversations", f"{self.conversations:,}"),
                ("to send", f"{self.to_send:,}"),
                ("already seeded", f"{self.already_seeded:,}"),
                ("invalid", f"{self.invalid:,}"),
                ("requests", f"{self.requests:,}"),
                ("estimated tokens", f"{self.estimated_tokens:,}")]
        usage = describe_usage(self.prompt_tokens, self.completion_tokens, self.cost)
        if usage:
            rows.append(("estimate", f"about {usage}"))
        if self.to_send:
            rows.append(("time", self.describe_eta()))
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
                       f"<td style='text-align:right'>{html.escape(value)}</td></tr>"
                       for name, value in rows)
        notes = "".join(f"<p style='color:#b45309'>&#9888; {html.escape(warning)}</p>"
                        for warning in self.warnings)
        lines = self.lines()
        return (f"<div class='memori-nb-plan'><p><b>{html.escape(lines[0])}</b><br>"
                f"{html.escape(lines[1])}</p>"
                f"<table class='memori-nb-table'>{body}</table>{notes}</div>")


def plan(data: pd.DataFrame | SeedData | Iterable[SeedData], *, db: Any = None,
         backend: Any = None, seed_config: SeedConfig | None = None,
         batch_size: int | None = None, latency: float = DEFAULT_LATENCY, force: bool = False,
         reach: bool = False, **from_dataframe_kwargs: Any) -> Plan:
    """Plan a run without sending anything: what is to send, already seeded or invalid, and
    the requests, tokens, cost and time it would take.

    Args:
        data: a DataFrame (read with :func:`memori_nb.from_dataframe`), a :class:`SeedData`,
            a list of them, or any iterable of SeedData (read once, as a run reads a stream).
        db: the database a run would write: what :class:`memori_nb.Memori` takes as
            ``conn`` (a DuckDB path, a connection, a SQL URL ...) or a store. Its ledger says
            what was seeded before; None, a file that does not exist yet, or a database
            without memori_nb's tables means nothing was. It is only read: nothing is
            created or migrated. One that cannot be opened or read (a DuckDB file another
            process holds) is planned without it, with a warning.
        backend: a backend name (``"memori"``, the default, ``"openai"``, ``"local"``) or
            object: its prompt overhead and prices give the tokens and cost, its
            ``check_ready()`` whether it could send.
        seed_config: the limits (``SeedConfig()`` by default).
        batch_size: requests in flight at once; overrides ``seed_config.batch_size``.
        latency: seconds a request is assumed to take, for the ETA (``DEFAULT_LATENCY``).
        force: plan to send again what the ledger holds (as ``seed(force=True)``).
        reach: also try a connection to the backend's server (no request is sent) and warn
            when it cannot be reached.
        **from_dataframe_kwargs: ``entity_id=``, ``conversation_col=`` ... for a DataFrame.

    Returns:
        A :class:`Plan`; ``str(plan)`` reads it out, and in Jupyter it shows as a table.

    Raises:
        InvalidInputError: ``data`` is none of the above.
        ConfigurationError: a bad config, latency, backend or ``db``.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"conversation_id": ["c1", "c1"], "role": ["user", "assistant"],
        ...                    "content": ["I live in Oslo.", "Nice!"]})
        >>> print(plan(df, backend="local", entity_id="u1"))
        1 conversation: 1 to send, 0 already seeded, 0 invalid
        to send: 1 request, about 5 tokens (2 messages)
        time: offline backend 'local': no network round trips to wait for
    """
    if (not isinstance(latency, (int, float)) or isinstance(latency, bool)
            or not math.isfinite(latency) or latency < 0):
        raise ConfigurationError(f"latency must be seconds >= 0, got {latency!r}")
    seeds = _seeds(data, from_dataframe_kwargs)
    config = config_of(seed_config)
    if batch_size is not None:
        config = replace(config, batch_size=batch_size)
    backend = resolve_backend("memori" if backend is None else backend)
    problem = (readiness_problem(backend, config.batch_size)
               or (reachability_problem(backend) if reach else None))
    warnings = [f"nothing can be sent: {problem}"] if problem else []
    store, owned, unread = _open(db)
    try:
        ledger = None
        if store is not None:
            try:
                # The journal first: DuckDB's journal_dir() leaves its result open, which
                # the ledger's next statement (not a registered frame) closes.
                if _journal_waits(store, backend):
                    warnings.append("an interrupted run left work in its journal; the run "
                                    "replays it first, so fewer conversations may be sent "
                                    "than planned here")
                ledger = None if force else _Ledger(store)
            except _READ_ERRORS as exc:
                if not _missing_table(exc):  # no tables: no run wrote here, nothing seeded
                    unread = _unread(exc)
        tally = _Tally(ledger)
        with paused_gc():  # the rows are acyclic; collections would rescan every message
            rows = list(tally.rows(seeds, config))
        tally.flush()
        unread = unread or tally.unread
    finally:
        if owned:
            store.close()
    if unread:
        warnings.append(f"ledger not read: {unread}; already-seeded conversations are "
                        f"counted as to send")
    stats = stats_frame(rows, backend, pricing_of(backend))
    repeats = _repeated_ids(stats)
    if repeats:
        warnings.append(f"{plural(len(repeats), 'conversation id')} met again in another "
                        f"record of its entity, the same size as the first copy: counted as "
                        f"already seeded (the run skips a copy with the same content, and fails "
                        f"one with other content)")
    valid = stats["error"].isna().to_numpy()
    seeded = np.zeros(len(stats), dtype=bool)
    seeded[list(tally.seeded) + repeats] = True
    stats["status"] = np.where(~valid, "invalid", np.where(seeded, "already_seeded", "to_send"))
    sending = stats[stats["status"] == "to_send"]
    characters, requests = int(sending["characters"].sum()), int(sending["requests"].sum())
    longest = int(sending["requests"].max()) if len(sending) else 0
    messages = int(sending["messages"].sum())
    estimate = estimate_requests(characters, requests,
                                 overhead_characters=prompt_overhead_of(backend),
                                 messages=messages,
                                 message_overhead_characters=message_overhead_of(backend),
                                 pricing=pricing_of(backend))
    tokens = bills_by_token(backend)
    offline = not getattr(backend, "requires_network", True)
    return Plan(conversations=len(stats), to_send=len(sending),
                already_seeded=int(seeded.sum()), invalid=int((~valid).sum()),
                entities=int(stats["entity_id"].nunique()), messages=messages,
                characters=characters, estimated_tokens=int(sending["estimated_tokens"].sum()),
                requests=requests, over_limit=int(sending["over_limit"].sum()),
                longest=longest,
                prompt_tokens=estimate.prompt_tokens if tokens else None,
                completion_tokens=estimate.completion_tokens if tokens else None,
                cost=estimate.cost if tokens else None, batch_size=config.batch_size,
                latency=float(latency),
                eta_seconds=None if offline else (
                    max(math.ceil(requests / config.batch_size), longest) * float(latency)),
                backend=getattr(backend, "name", type(backend).__name__), force=force,
                warnings=tuple(warnings),
                validation_warnings=dict(tally.warnings.most_common()),
                validation_warning_examples=tally.examples, stats=stats)


def _repeated_ids(stats: pd.DataFrame) -> list[int]:
    """The later copies of a valid (entity, conversation id), from another record, which a
    run sends once. A copy whose size differs from the first's is marked invalid in place
    (the run fails it); the positions of those of the same size are returned: the run skips
    a copy with the same content, which a plan cannot be sure of without hashing every
    conversation, and a size is the same for nearly all other content only by chance."""
    keys = stats.loc[stats["error"].isna(), ["entity_id", "conversation_id"]]
    later = keys.duplicated()
    if not later.any():
        return []
    firsts = keys[~later & keys.duplicated(keep=False)]
    first = dict(zip(firsts.itertuples(index=False, name=None), firsts.index))
    size = list(zip(stats["messages"], stats["characters"]))
    alike = []
    for position, entity, cid in keys[later].itertuples(name=None):
        if size[position] == size[first[entity, cid]]:
            alike.append(position)
        else:
            stats.at[position, "error"] = repeated_id_reason(cid, entity, first[entity, cid],
                                                             position)
    return alike


class _Ledger:
    """The store's ledger, asked as the engine asks it: an entity it has never seen needs
    no look-ups. Only read: the engine builds the tables before its first look-up, a plan
    never does (a missing table is an empty ledger, see :func:`_missing_table`)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.empty = store.ledger_is_empty()

    def known(self, entity_ids: set[str]) -> set[str]:
        """Which of ``entity_ids`` the ledger has a conversation of (one query)."""
        if self.empty or not entity_ids:
            return set()
        return self.store.seeded_entities(entity_ids)

    def seeded(self, keys: list[tuple[str, str, str]]) -> set[int]:
        return set() if self.empty else self.store.already_seeded(keys)


class _Tally:
    """Collects, while the rows are made, the validation warnings and which conversations
    the ledger holds, in windows of ``_LEDGER_WINDOW`` keys. The entities the ledger knows
    (whose conversations need a content hash to look up) are asked once for a list; a
    stream cannot be held back to ask for many at once (a streaming source wants each
    SeedData read before the next), so for a stream every conversation is hashed and looked
    up (``known`` is None) rather than asking one query per entity. A ledger that fails to
    answer is dropped (``unread`` says why) and what it answered forgotten."""

    def __init__(self, ledger: _Ledger | None) -> None:
        self.ledger = ledger
        self.unread: str | None = None
        self.known: set[str] | None = set()
        self.position = 0  # of the next row
        self.seeded: set[int] = set()
        self.pending: list[tuple[int, tuple[str, str, str]]] = []
        self.warnings: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def rows(self, seeds: Iterable[SeedData], config: SeedConfig) -> Iterator[tuple]:
        if isinstance(seeds, (list, tuple)):
            seeds = [_check_seed(seed) for seed in seeds]
            self._ask_entities({seed.entity_id for seed in seeds})
        elif self.ledger is not None and not self.ledger.empty:
            self.known = None  # a stream: hash and look up everything
        for seed in seeds:
            _check_seed(seed)
            hashes = self.ledger is not None and (self.known is None
                                                  or seed.entity_id in self.known)
            for row in plan_rows(seed, config, content_hashes=hashes,
                                 on_validated=self._validated):
                self.position += 1
                yield row

    def _ask_entities(self, entity_ids: set[str]) -> None:
        if self.ledger is None:
            return
        try:
            self.known = self.ledger.known(entity_ids)
        except _READ_ERRORS as exc:
            self._drop_ledger(exc)

    def _validated(self, row: PlanRow) -> None:
        for kind, n in count_warnings(row.warnings).items() if row.warnings else ():
            self.warnings[kind] += n
            shown = self.examples.setdefault(kind, [])
            if len(shown) < MAX_WARNING_EXAMPLES:
                shown.append(f"{row.entity_id} / {row.conversation_id}")
        if row.content_hash is not None and self.ledger is not None:
            self.pending.append((self.position,
                                 (row.entity_id, row.conversation_id, row.content_hash)))
            if len(self.pending) >= _LEDGER_WINDOW:
                self.flush()

    def flush(self) -> None:
        if not self.pending or self.ledger is None:
            return
        try:
            found = self.ledger.seeded([key for _, key in self.pending])
        except _READ_ERRORS as exc:
            self._drop_ledger(exc)
            return
        self.seeded.update(self.pending[index][0] for index in found)
        self.pending = []

    def _drop_ledger(self, exc: Exception) -> None:
        # Half a ledger would count some seeded conversations and not others: none.
        self.ledger, self.unread = None, _unread(exc)
        self.known, self.seeded, self.pending = set(), set(), []


def _check_seed(seed: Any) -> SeedData:
    if not isinstance(seed, SeedData):
        raise InvalidInputError(f"expected SeedData, got {type(seed).__name__}")
    return seed


def _seeds(data: Any, from_dataframe_kwargs: dict[str, Any]) -> Iterable[SeedData]:
    """SeedData from what chunking_stats takes, or a stream of SeedData as it is."""
    if (not isinstance(data, (pd.DataFrame, SeedData, list, tuple, str, bytes, dict, Path))
            and isinstance(data, Iterable) and not from_dataframe_kwargs):
        return data  # streamed: each SeedData is checked as it comes
    return seeds_of(data, from_dataframe_kwargs)


def _open(db: Any) -> tuple[Store | None, bool, str | None]:
    """The store to ask, whether it was opened here (to close it), and why it could not be
    opened (None: it was, or there is nothing to open). No store for no database, an
    in-memory one (empty when opened) or a DuckDB or SQLite file not made yet (opening it
    would create it)."""
    if db is None or _not_made_yet(db):
        return None, False, None
    try:
        store = open_store(db)
    except StoreError as exc:  # locked by another process, server unreachable
        return None, False, _unread(exc)
    return store, store is not db, None


def _not_made_yet(db: Any) -> bool:
    """Whether opening ``db`` would create it: DuckDB in memory, or a DuckDB path or a
    SQLite URL (or SQLAlchemy engine) naming a file that does not exist."""
    if isinstance(db, (str, Path)) and not is_sql_conn(db):
        return str(db) == ":memory:" or not Path(db).exists()
    if isinstance(db, str):
        url = db
    elif type(db).__module__.startswith("sqlalchemy"):
        url = getattr(db, "url", None)
    else:
        return False
    try:
        from sqlalchemy.engine import make_url

        url = make_url(url)
    except Exception:  # noqa: BLE001 - no SQLAlchemy or a bad URL: open_store says which
        return False
    name = url.database or ""
    return (url.get_backend_name() == "sqlite" and name not in ("", ":memory:")
            and not name.startswith("file:") and not Path(name).exists())


def _missing_table(exc: BaseException) -> bool:
    """Whether ``exc`` says the ledger's table of seeded conversations is missing (DuckDB's
    catalog error, SQLite's "no such table", PostgreSQL's "does not exist"): a database no
    run wrote, so nothing was seeded. (That table is as old as memori_nb; a database from an
    earlier version that lacks only a newer table is not empty, and is reported unread.)"""
    text = (str(exc).lower().splitlines() or [""])[0]  # DuckDB suggests other names after
    return "seeded_conversations" in text and (
        isinstance(exc, duckdb.CatalogException) or "no such table" in text
        or "does not exist" in text)


def _unread(exc: BaseException) -> str:
    """Why the ledger could not be read, in a few words: the first line, without the
    advice after the reason (``"... is in use by process 42 (python)"``)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split(", e.g. a notebook kernel")[0]


def _journal_waits(store: Any, backend: Any) -> bool:
    """Whether an interrupted run's journal is waiting to be replayed (a network backend's
    run replays it before it reads the ledger)."""
    if not getattr(backend, "requires_network", True) or not hasattr(store, "journal_dir"):
        return False
    directory = store.journal_dir()
    return directory is not None and any(Path(directory).glob("*.jsonl"))


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"3 min"``, ``"2.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
