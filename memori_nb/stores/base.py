"""The one small interface the seeding engine writes through, and what it writes."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..models import (Conversation, ConversationResult, Extraction, SeedConfig, SeedCounters,
                      Triple)


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """What the store writes for one finished conversation."""

    result: ConversationResult
    content_hash: str | None
    process_id: str | None
    extraction: Extraction | None
    conversation: Conversation | None = None


@dataclass(frozen=True, slots=True)
class PartialRecord:
    """A chunked conversation that a run stopped in the middle of: what its finished chunks
    returned (merged), so the next run sends only the chunks after ``chunks_done``, carrying
    ``summary``. Keyed by (entity_id, conversation_id, content_hash): other content starts
    over."""

    entity_id: str
    process_id: str | None
    conversation_id: str
    content_hash: str
    chunks_done: int
    chunk_count: int
    summary: str | None
    extraction: Extraction

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.entity_id, self.conversation_id, self.content_hash)


# How results() lists a run's rows: failed first (what needs a look), then succeeded, then
# skipped (nothing happened to them), as a SQL ORDER BY key every store's dialect reads.
RESULT_ORDER_SQL = ("CASE status WHEN 'failed' THEN 0 WHEN 'succeeded' THEN 1 "
                    "WHEN 'skipped' THEN 2 ELSE 3 END")

_TRIPLE_FIELDS = ("subject_name", "subject_type", "predicate", "object_name", "object_type")


def extraction_to_dict(extraction: Extraction) -> dict[str, Any]:
    """An Extraction as plain JSON values (triples as lists)."""
    data = {"triples": [[getattr(t, f) for f in _TRIPLE_FIELDS] for t in extraction.triples],
            "facts": list(extraction.facts), "summary": extraction.summary,
            "attributes": list(extraction.attributes)}
    if extraction.sources is not None:
        data["sources"] = [[fact, list(positions)] for fact, positions in extraction.sources]
    return data


def extraction_from_dict(data: dict[str, Any]) -> Extraction:
    """The Extraction :func:`extraction_to_dict` made."""
    triples = tuple(Triple(**dict(zip(_TRIPLE_FIELDS, t))) for t in data["triples"])
    sources = data.get("sources")  # absent from what an earlier version wrote
    return Extraction(triples=triples, facts=tuple(data["facts"]), summary=data["summary"],
                      attributes=tuple(data["attributes"]),
                      sources=None if sources is None else tuple(
                          (fact, tuple(positions)) for fact, positions in sources))


def extraction_to_json(extraction: Extraction) -> str:
    """An Extraction as JSON text, as the stores keep partial results."""
    return json.dumps(extraction_to_dict(extraction))


def extraction_from_json(text: str) -> Extraction:
    """The Extraction :func:`extraction_to_json` wrote."""
    return extraction_from_dict(json.loads(text))


def with_excerpts(frame: Any) -> Any:
    """A ``fact_sources`` DataFrame with each message cut to the part around its fact's
    words (:func:`memori_nb.provenance.excerpt`) and positions as nullable integers."""
    from ..provenance import excerpt

    frame["position"] = frame["position"].astype("Int64")
    frame["message"] = [excerpt(text, fact) if isinstance(text, str) else None
                        for text, fact in zip(frame["message"], frame["fact"])]
    return frame


# Runs this process started and has not finished: a run row naming this very process
# (a restarted container reuses pid and hostname) is only alive if it is one of these.
_OWN_RUNS: set[str] = set()


# The kernel's first PID namespace (PROC_PID_INIT_INO): the machine's own, outside containers.
_INIT_PID_NAMESPACE = "pid:[4026531836]"


def this_process() -> tuple[str, int]:
    """(host, pid), as recorded with a run so a crashed run can be told later.

    The host is the hostname; in a container with its own PID namespace, followed by it
    (``"web-1/pid:[4026532577]"``): containers that share a hostname (host networking)
    cannot see each other's processes, so each must count as another host to the others,
    whose runs it cannot check, rather than find their live runs dead."""
    name = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux, or no /proc
        namespace = _INIT_PID_NAMESPACE
    host = name if namespace == _INIT_PID_NAMESPACE else f"{name}/{namespace}"
    return host, os.getpid()


def claim_run(run_id: str) -> tuple[str, int]:
    """The (hostname, pid) to record with a run this process starts, which it now owns."""
    _OWN_RUNS.add(run_id)
    return this_process()


def release_run(run_id: str) -> None:
    """The run is finished: this process no longer owns it."""
    _OWN_RUNS.discard(run_id)


def run_is_orphaned(run_id: str, host: str | None, pid: int | None) -> bool:
    """True for a ``running`` run whose process is gone: same host, and the pid is dead
    (or is this process, which did not start it). Another host's runs cannot be checked."""
    here, me = this_process()
    if host != here or pid is None or os.name == "nt":  # Windows' os.kill(pid, 0) kills
        return False
    if pid == me:
        return run_id not in _OWN_RUNS
    return not process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (always True on Windows, where
    ``os.kill(pid, 0)`` would kill it)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but is another user's (PermissionError)
    return True


def orphaned_reason(host: str, pid: int) -> str:
    return f"process {pid} on {host} ended before the run finished (killed or crashed)"


@runtime_checkable
class Store(Protocol):
    """Where a run's results, its ledger and the memories go.

    The engine calls ``build``, the ledger look-ups and ``start_run`` / ``finish_run`` from
    the event loop (through a thread where they may block), and ``write`` from the batching
    writer. ``write`` must store a batch in one transaction: results, ledger rows and
    memories together, so a crash never leaves one without the other.

    ``start_run`` records this process (host, pid); ``build`` marks ``running`` runs whose
    process on this host is gone as ``unfinished``. ``save_partial`` keeps what the finished
    chunks of a stopped conversation returned; ``write`` drops it once the conversation
    succeeds.

    ``max_id_length`` is the longest entity or process id the store can hold (None: no limit);
    ``threadsafe`` says whether the store may be used from a worker thread. A store may also
    have ``journal_dir()``: where runs keep their write-ahead journal (see
    :mod:`memori_nb.stores.journal`); without it, a killed run loses what it had not written.
    It may have ``prepare(records)``: work a coming ``write`` of these records needs, which the
    batching writer has it do ahead while results gather (see
    :class:`memori_nb.stores.writer.BatchWriter`).
    A store several workers share has ``claim``, ``renew_claims`` and ``release_claims``
    (see :meth:`memori_nb.stores.sql.SqlStore.claim`), which ``seed_all(..., claims=...)``
    needs, and which every run on it then uses (claiming under its run id by default).
    """

    max_id_length: int | None
    threadsafe: bool

    def build(self) -> None: ...

    def ledger_is_empty(self) -> bool: ...

    def seeded_entities(self, entity_ids: set[str]) -> set[str]: ...

    def already_seeded(self, keys: list[tuple[str, str, str]], *,
                       by_run: str | None = None) -> set[int]: ...
    # A store that holds claims (``claim``) also takes ``since=`` (a datetime): only what
    # was seeded at or after it.

    def start_run(self, run_id: str, *, backend: str, config: SeedConfig,
                  force: bool) -> None: ...

    def finish_run(self, run_id: str, *, status: str, counters: SeedCounters,
                   duration_ms: float, stopped_reason: str | None) -> None: ...

    def write(self, run_id: str, records: list[ResultRecord]) -> None: ...

    # Chunk-level progress of conversations a run stopped in the middle of.
    def save_partial(self, run_id: str, record: PartialRecord) -> None: ...

    def partials(self, keys: list[tuple[str, str, str]]
                 ) -> dict[tuple[str, str, str], PartialRecord]: ...

    def close(self) -> None: ...

    # Result queries, as DataFrames.
    def sql(self, query: str, params: list[Any] | None = None) -> Any: ...

    def latest_run_id(self) -> str | None: ...

    def results(self, run_id: str | None = None) -> Any: ...

    def failures(self, run_id: str | None = None) -> Any: ...

    def warnings(self, run_id: str | None = None) -> Any: ...

    def facts(self, entity_id: str | None = None) -> Any: ...

    def runs(self) -> Any: ...
