"""Augmentation backends: ``memori`` (the AA service) and ``local`` (offline extractor)."""

from __future__ import annotations

import httpx

from ..errors import ConfigurationError
from .base import AugmentationBackend, AugmentationRequest
from .local import LocalBackend
from .memori import MemoriBackend

BACKEND_NAMES = ("memori", "local")


def resolve_backend(backend: str | AugmentationBackend, *, api_key: str | None = None,
                    base_url: str | None = None,
                    http_client: httpx.AsyncClient | None = None) -> AugmentationBackend:
    """Return a backend object for a name (``"memori"``, ``"local"``) or pass one through.

    ``http_client`` is used as given: an httpx client belongs to one event loop, so a caller
    who passes one and seeds from several ``asyncio.run`` calls must pass a client per loop.
    Without it the ``memori`` backend makes its own, anew in each loop. For other settings
    (``max_response_bytes``, ``timeout``) pass a :class:`MemoriBackend` object.
    """
    if isinstance(backend, str):
        if backend == "memori":
            return MemoriBackend(api_key=api_key, base_url=base_url, client=http_client)
        if backend == "local":
            return LocalBackend()
        raise ConfigurationError(f"unknown backend {backend!r}; use one of "
                                 f"{', '.join(BACKEND_NAMES)} or a backend object")
    if isinstance(backend, AugmentationBackend):
        return backend
    raise ConfigurationError(f"backend must be a name ({', '.join(BACKEND_NAMES)}) or an "
                             f"object with async augment() and aclose(), got {backend!r}")


__all__ = ["AugmentationBackend", "AugmentationRequest", "BACKEND_NAMES", "LocalBackend",
           "MemoriBackend", "resolve_backend"]
