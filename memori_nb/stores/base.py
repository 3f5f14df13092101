"""The one small interface the seeding engine writes through, and what it writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..models import Conversation, ConversationResult, Extraction, SeedConfig, SeedCounters


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """What the store writes for one finished conversation."""

    result: ConversationResult
    content_hash: str | None
    process_id: str | None
    extraction: Extraction | None
    conversation: Conversation | None = None


@runtime_checkable
class Store(Protocol):
    """Where a run's results, its ledger and the memories go.

    The engine calls ``build``, the ledger look-ups and ``start_run`` / ``finish_run`` from
    the event loop (through a thread where they may block), and ``write`` from the batching
    writer. ``write`` must store a batch in one transaction: results, ledger rows and
    memories together, so a crash never leaves one without the other.

    ``max_id_length`` is the longest entity or process id the store can hold (None: no limit);
    ``threadsafe`` says whether the store may be used from a worker thread.
    """

    max_id_length: int | None
    threadsafe: bool

    def build(self) -> None: ...

    def ledger_is_empty(self) -> bool: ...

    def seeded_entities(self, entity_ids: set[str]) -> set[str]: ...

    def already_seeded(self, keys: list[tuple[str, str, str]]) -> set[int]: ...

    def start_run(self, run_id: str, *, backend: str, config: SeedConfig,
                  force: bool) -> None: ...

    def finish_run(self, run_id: str, *, status: str, counters: SeedCounters,
                   duration_ms: float, stopped_reason: str | None) -> None: ...

    def write(self, run_id: str, records: list[ResultRecord]) -> None: ...

    def close(self) -> None: ...

    # Result queries, as DataFrames.
    def sql(self, query: str, params: list[Any] | None = None) -> Any: ...

    def latest_run_id(self) -> str | None: ...

    def results(self, run_id: str | None = None) -> Any: ...

    def failures(self, run_id: str | None = None) -> Any: ...

    def warnings(self, run_id: str | None = None) -> Any: ...

    def facts(self, entity_id: str | None = None) -> Any: ...

    def runs(self) -> Any: ...
