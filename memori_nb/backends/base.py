"""The one small interface every augmentation backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..models import Extraction, Message


@dataclass(frozen=True, slots=True, kw_only=True)
class AugmentationRequest:
    """One request: a chunk of a conversation plus the summary of the chunk before it."""

    entity_id: str
    conversation_id: str
    messages: tuple[Message, ...]
    process_id: str | None = None
    summary: str | None = None
    chunk_index: int = 0
    chunk_count: int = 1


@runtime_checkable
class AugmentationBackend(Protocol):
    """Turns messages into facts.

    ``augment`` returns an :class:`Extraction` or raises an
    :class:`~memori_nb.errors.AugmentationError` subclass; the engine decides on retries from
    the subclass. ``requires_network`` tells the engine and the CLI whether anything leaves
    the machine (and so whether quota is at stake).

    One backend object may serve several event loops one after another (each ``asyncio.run``
    of a seed): anything bound to a loop, such as an HTTP client, is made again when the
    running loop changed.
    """

    name: str
    requires_network: bool

    async def augment(self, request: AugmentationRequest) -> Extraction: ...

    async def aclose(self) -> None: ...
