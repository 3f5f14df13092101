"""What the streaming readers share: splitting a stream of raw conversations into one
SeedData per run of the same entity, lazily; and read options decided once per file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import InvalidInputError
from ..models import SeedData
from ..timestamps import TimestampEvidence
from ..validation import ReadOptions

_END = object()
_TAKEN = object()  # the head item was handed out; the next one is not read yet


def seed_runs(items: Iterator[tuple[tuple[str, str | None], Any]],
              options: ReadOptions | None = None) -> Iterator[SeedData]:
    """One :class:`SeedData` per run of consecutive items with the same
    ``(entity_id, process_id)`` key (ids compared without surrounding whitespace, which
    :meth:`SeedData.for_conversations` drops with a warning); ``options`` for each.

    Like ``itertools.groupby``: nothing is read ahead but the first item of the next run,
    and asking for the next SeedData skips what is left of the current one. Unlike groupby,
    reading a SeedData's conversations after moving past it raises instead of quietly
    giving nothing (``list(read_jsonl(...))`` would otherwise look like empty entities).
    """
    return _Runs(items, options).seeds()


def read_options(evidence: TimestampEvidence | None, source: str, *, dayfirst: bool | None,
                 timestamp_format: str | None,
                 role_map: Mapping[str, str | None] | None) -> ReadOptions:
    """The source's :class:`ReadOptions`: its timestamp rule (the user's, else what
    ``evidence`` proves; raises AmbiguousTimestampsError when it proves nothing) and roles."""
    evidence = evidence if evidence is not None else TimestampEvidence()
    rule = evidence.rule(source, dayfirst=dayfirst, format=timestamp_format)
    return ReadOptions(timestamps=rule, role_map=role_map)


def add_counted(evidence: TimestampEvidence, value: str, count: int) -> None:
    """Add ``value`` to ``evidence`` as if it were seen ``count`` times (grouped values)."""
    before = (evidence.day_first, evidence.month_first, evidence.undecided)
    evidence.add(value)
    extra = count - 1
    evidence.day_first += (evidence.day_first - before[0]) * extra
    evidence.month_first += (evidence.month_first - before[1]) * extra
    evidence.undecided += (evidence.undecided - before[2]) * extra


def _same(key: Any) -> tuple[str, str | None]:
    return key[0].strip(), key[1].strip() if key[1] else None


class _Runs:
    def __init__(self, items: Iterator, options: ReadOptions | None) -> None:
        self._items = items
        self._options = options
        self._head: Any = _END
        self._generation = 0

    def _pull(self) -> Any:
        return next(self._items, _END)

    def seeds(self) -> Iterator[SeedData]:
        self._head = self._pull()
        while self._head is not _END:
            key = self._head[0]
            same = _same(key)
            self._generation += 1
            yield SeedData.for_conversations(
                entity_id=key[0], process_id=key[1], options=self._options,
                conversations=self._run(key, same, self._generation))
            self._generation += 1  # the run just handed out is over for its reader
            if self._head is _TAKEN:
                self._head = self._pull()
            while self._head is not _END and _same(self._head[0]) == same:
                self._head = self._pull()

    def _run(self, key: Any, same: Any, generation: int) -> Iterator[Any]:
        self._check(same, generation)
        while True:
            head = self._head
            if head is _END or (head[0] != key and _same(head[0]) != same):
                return
            self._head = _TAKEN
            yield head[1]
            self._check(same, generation)
            self._head = self._pull()

    def _check(self, same: Any, generation: int) -> None:
        if generation != self._generation:
            raise InvalidInputError(
                f"the conversations of entity {same[0]!r} were passed over: this source "
                f"streams, so read each SeedData's conversations before taking the next "
                f"SeedData (Memori.seed does)")
