"""Split a stream of conversations into one SeedData per run of the same entity, lazily."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InvalidInputError
from ..models import SeedData

_END = object()
_TAKEN = object()  # the head item was handed out; the next one is not read yet


def seed_runs(items: Iterator[tuple[tuple[str, str | None], Any]]) -> Iterator[SeedData]:
    """One :class:`SeedData` per run of consecutive items with the same
    ``(entity_id, process_id)`` key.

    Like ``itertools.groupby``: nothing is read ahead but the first item of the next run,
    and asking for the next SeedData skips what is left of the current one. Unlike groupby,
    reading a SeedData's conversations after moving past it raises instead of quietly
    giving nothing (``list(read_jsonl(...))`` would otherwise look like empty entities).
    """
    return _Runs(items).seeds()


class _Runs:
    def __init__(self, items: Iterator) -> None:
        self._items = items
        self._head: Any = _END
        self._generation = 0

    def _pull(self) -> Any:
        return next(self._items, _END)

    def seeds(self) -> Iterator[SeedData]:
        self._head = self._pull()
        while self._head is not _END:
            key = self._head[0]
            self._generation += 1
            yield SeedData(entity_id=key[0], conversations=self._run(key, self._generation),
                           process_id=key[1])
            self._generation += 1  # the run just handed out is over for its reader
            if self._head is _TAKEN:
                self._head = self._pull()
            while self._head is not _END and self._head[0] == key:
                self._head = self._pull()

    def _run(self, key: Any, generation: int) -> Iterator[Any]:
        self._check(key, generation)
        while True:
            head = self._head
            if head is _END or head[0] != key:
                return
            self._head = _TAKEN
            yield head[1]
            self._check(key, generation)
            self._head = self._pull()

    def _check(self, key: Any, generation: int) -> None:
        if generation != self._generation:
            raise InvalidInputError(
                f"the conversations of entity {key[0]!r} were passed over: this source "
                f"streams, so read each SeedData's conversations before taking the next "
                f"SeedData (Memori.seed does)")
