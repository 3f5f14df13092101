"""Augmentation backends: ``memori`` (the AA service), ``openai`` (your own chat model over
any OpenAI-compatible server) and ``local`` (offline extractor)."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ConfigurationError
from .base import AugmentationBackend, AugmentationRequest
from .local import LocalBackend
from .memori import MemoriBackend
from .openai import OpenAIBackend

BACKEND_NAMES = ("memori", "openai", "local")
# Settings only the openai backend takes (resolve_backend's **options).
OPENAI_OPTIONS = ("model", "temperature", "max_tokens", "headers", "requests_per_minute",
                  "tokens_per_minute", "prompt_price", "completion_price")


def resolve_backend(backend: str | AugmentationBackend, *, api_key: str | None = None,
                    base_url: str | None = None,
                    http_client: httpx.AsyncClient | None = None,
                    **options: Any) -> AugmentationBackend:
    """Return a backend object for a name (``"memori"``, ``"openai"``, ``"local"``) or pass
    one through.

    Args:
        backend: a name or a backend object.
        api_key, base_url: for ``memori`` and ``openai`` (defaults from their environment
            variables: ``MEMORI_API_KEY``/``MEMORI_API_URL_BASE``, ``OPENAI_API_KEY``/
            ``OPENAI_BASE_URL``).
        http_client: used as given: an httpx client belongs to one event loop, so a caller
            who passes one and seeds from several ``asyncio.run`` calls must pass a client
            per loop. Without it the HTTP backends make their own, anew in each loop.
        **options: for ``openai`` only: ``model``, ``temperature``, ``max_tokens``,
            ``headers``, ``requests_per_minute``, ``tokens_per_minute``, ``prompt_price``,
            ``completion_price`` (see :class:`OpenAIBackend`). For other settings pass a
            backend object.

    Raises:
        ConfigurationError: an unknown name, or an option the backend does not take.
    """
    if isinstance(backend, str):
        unknown = [name for name in options if name not in OPENAI_OPTIONS]
        if unknown:
            raise ConfigurationError(f"unknown backend option {unknown[0]!r}; the options are "
                                     f"{', '.join(OPENAI_OPTIONS)} (backend 'openai')")
        given = [name for name, value in options.items() if value is not None]
        if backend != "openai" and given:
            raise ConfigurationError(f"backend {backend!r} does not take {given[0]!r} (only "
                                     f"backend 'openai' does)")
        if backend == "memori":
            return MemoriBackend(api_key=api_key, base_url=base_url, client=http_client)
        if backend == "openai":
            return OpenAIBackend(api_key=api_key, base_url=base_url, client=http_client,
                                 **{name: value for name, value in options.items()
                                    if value is not None})
        if backend == "local":
            return LocalBackend()
        raise ConfigurationError(f"unknown backend {backend!r}; use one of "
                                 f"{', '.join(BACKEND_NAMES)} or a backend object")
    if isinstance(backend, AugmentationBackend):
        return backend
    raise ConfigurationError(f"backend must be a name ({', '.join(BACKEND_NAMES)}) or an "
                             f"object with async augment() and aclose(), got {backend!r}")


__all__ = ["AugmentationBackend", "AugmentationRequest", "BACKEND_NAMES", "LocalBackend",
           "MemoriBackend", "OpenAIBackend", "resolve_backend"]
