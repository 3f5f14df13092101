"""The ``memori`` backend: Memori's Advanced Augmentation (AA) service over httpx."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import httpx

from .._version import __version__
from ..errors import (AugmentationError, ConfigurationError, MissingApiKeyError, PayloadRejectedError, QuotaExceededError,
                      RateLimitedError, RequestFailedError, TransientError)
from ..models import DEFAULT_REQUEST_TIMEOUT, Extraction, Triple
from .base import AugmentationRequest

DEFAULT_BASE_URL = "https://api.memorilabs.ai"
API_KEY_ENV = "MEMORI_API_KEY"
BASE_URL_ENV = "MEMORI_API_URL_BASE"
AUGMENTATION_PATH = "/v1/sdk/augmentation"
_DETAIL_LIMIT = 300


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class MemoriBackend:
    """Sends each request to ``POST {base_url}/v1/sdk/augmentation``.

    Args:
        api_key: defaults to ``$MEMORI_API_KEY``. Sent only in the Authorization header;
            never shown in reprs, logs or errors.
        base_url: defaults to ``$MEMORI_API_URL_BASE`` or ``https://api.memorilabs.ai``.
        client: an ``httpx.AsyncClient`` to use (tests pass one with a MockTransport);
            by default one is created on first use and closed by :meth:`aclose`.
        timeout: seconds per request when the backend creates its own client.

    Entity and process ids leave the machine only as SHA-256 hex digests.

    Raises:
        MissingApiKeyError: from :meth:`check_ready` / :meth:`augment` when there is no key.
    """

    name = "memori"
    requires_network = True

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 client: httpx.AsyncClient | None = None,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self._client = client
        self._owns_client = client is None
        self.timeout = timeout

    def __repr__(self) -> str:
        key = "set" if self._api_key else "missing"
        return f"MemoriBackend(base_url={self.base_url!r}, api_key={key})"

    def check_ready(self) -> None:
        """Raise :class:`MissingApiKeyError` unless an API key is configured."""
        if self._api_key and (self._api_key != self._api_key.strip()
                              or not self._api_key.isascii()
                              or not self._api_key.isprintable()):
            raise ConfigurationError(
                f"the API key (from {API_KEY_ENV} or api_key=) has spaces, line breaks or "
                f"non-ASCII characters; check how it was copied (it is not shown here)")
        if not self._api_key:
            raise MissingApiKeyError(
                f"the 'memori' backend needs an API key: set {API_KEY_ENV} (or pass api_key=), "
                f"or use the offline backend (backend='local', or --backend local)")

    async def augment(self, request: AugmentationRequest) -> Extraction:
        """Send one request; map the HTTP outcome to an Extraction or an AugmentationError."""
        self.check_ready()
        if self._client is None:
            self._client = default_client(self.timeout)
        cid = request.conversation_id
        try:
            response = await self._client.post(
                self.base_url + AUGMENTATION_PATH, json=build_payload(request),
                headers={"Authorization": f"Bearer {self._api_key}"})
        except httpx.TimeoutException as exc:
            raise TransientError(f"request timed out ({type(exc).__name__})",
                                 conversation_id=cid) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise TransientError(f"connection failed: {type(exc).__name__}: {exc}",
                                 conversation_id=cid) from exc
        except httpx.HTTPError as exc:
            raise RequestFailedError(f"request failed: {type(exc).__name__}: {exc}",
                                     conversation_id=cid) from exc
        try:
            return parse_response(response, cid)
        except AugmentationError as exc:
            # A server may echo the request back in its error; the key must not travel on.
            if self._api_key in exc.message:
                exc.message = exc.message.replace(self._api_key, "***")
                exc.args = (exc.message,)
            raise

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None


def default_client(timeout: float = DEFAULT_REQUEST_TIMEOUT) -> httpx.AsyncClient:
    """The HTTP client the backend makes for itself (create it inside the loop that uses it).

    No keep-alive cap: httpx keeps 20 connections by default, and a window of 50 requests
    would then reconnect for most of them. The engine's window bounds the connections.
    """
    # Only connecting is bounded here: the engine bounds each request with request_timeout.
    return httpx.AsyncClient(timeout=httpx.Timeout(None, connect=timeout), limits=httpx.Limits(
        max_connections=None, max_keepalive_connections=None))


def build_payload(request: AugmentationRequest) -> dict[str, Any]:
    """The AA request body (DESIGN.md section 2)."""
    process = sha256_hex(request.process_id) if request.process_id else None
    return {
        "conversation": {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "summary": request.summary,
        },
        "meta": {
            "attribution": {"entity": {"id": sha256_hex(request.entity_id)},
                            "process": {"id": process}},
            "framework": {"provider": "memori_nb"},
            "llm": {"model": {"provider": None, "sdk": {"version": None}, "version": None}},
            "platform": {"provider": None},
            "sdk": {"lang": "python", "version": __version__},
            "storage": {"cockroachdb": False, "dialect": "duckdb"},
        },
    }


def parse_response(response: httpx.Response, conversation_id: str) -> Extraction:
    """Map a response to an Extraction, or raise the matching AugmentationError."""
    status = response.status_code
    context = {"conversation_id": conversation_id, "status_code": status}
    if status == 200:
        return _parse_extraction(response, context)
    detail = _detail(response)
    if status == 429:
        if "quota" in detail.lower():
            raise QuotaExceededError(detail or "quota exceeded", **context)
        raise RateLimitedError(detail or "rate limited",
                               retry_after=_retry_after(response), **context)
    if status == 422:
        raise PayloadRejectedError(detail or "payload rejected", **context)
    if status >= 500 or status == 408:
        raise TransientError(detail or "server error", **context)
    raise RequestFailedError(detail or response.reason_phrase, **context)


def _parse_extraction(response: httpx.Response, context: dict) -> Extraction:
    # A 200 that is not the documented shape is a failure, never an empty success.
    try:
        body = response.json()
        entity = body["entity"]
        triples = tuple(
            Triple(subject_name=str(t["subject"]["name"]),
                   subject_type=str(t["subject"].get("type") or "unknown"),
                   predicate=str(t["predicate"]),
                   object_name=str(t["object"]["name"]),
                   object_type=str(t["object"].get("type") or "unknown"))
            for t in entity.get("triples") or ())
        facts = tuple(str(f) for f in entity.get("facts") or ()) or tuple(
            t.fact for t in triples)
        summary = (body.get("conversation") or {}).get("summary")
        attributes = tuple(str(a) for a in (body.get("process") or {}).get("attributes") or ())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransientError(f"malformed response body ({type(exc).__name__}: {exc})",
                             **context) from exc
    return Extraction(triples=triples, facts=facts, summary=summary, attributes=attributes)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_DETAIL_LIMIT]
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if body.get(key):
                value = body[key]
                return (value if isinstance(value, str) else json.dumps(value))[:_DETAIL_LIMIT]
    return json.dumps(body)[:_DETAIL_LIMIT]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare for APIs; fall back to our own backoff
