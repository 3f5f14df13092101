"""The ``memori`` backend: Memori's Advanced Augmentation (AA) service over httpx.

What leaves this module is safe to show and store: errors name the URL and what to check,
answers are checked against the protocol before they count as a success, bodies are read
up to a cap, and the API key is hidden, whole or in part, in every message and answer.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request

import httpx

from ..errors import (AugmentationError, ConfigurationError, EndpointError, MissingApiKeyError,
                      PayloadRejectedError, QuotaExceededError, RateLimitedError,
                      RequestFailedError, ServiceUnreachableError, TransientError)
from ..http import KeepAliveClient
from ..models import Extraction
from ..protocols.aa import AUGMENTATION_PATH, encode_payload, parse_extraction
from ..ratelimit import retry_after_seconds
from .base import (AugmentationRequest, LoopClient, check_ready_once, check_settings,
                   secrets_kept_out, shown_url)

DEFAULT_BASE_URL = "https://api.memorilabs.ai"
API_KEY_ENV = "MEMORI_API_KEY"
BASE_URL_ENV = "MEMORI_API_URL_BASE"
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# A TCP connect that takes longer is a host that cannot be reached, not a slow answer.
DEFAULT_CONNECT_TIMEOUT = 10.0
# Of an error answer only the start is read: enough for any detail, never a flood.
ERROR_BODY_BYTES = 64 * 1024
# Parts of the key this long or longer are hidden wherever they appear.
MIN_SECRET_PART = 8
_DETAIL_LIMIT = 300
_HIDDEN = "***"


class MemoriBackend:
    """Sends each request to ``POST {base_url}/v1/sdk/augmentation``.

    Args:
        api_key: defaults to ``$MEMORI_API_KEY``. Sent only in the Authorization header;
            hidden, whole or in part, in reprs, errors and stored answers.
        base_url: defaults to ``$MEMORI_API_URL_BASE`` or ``https://api.memorilabs.ai``.
        client: an ``httpx.AsyncClient`` to use (tests pass one with a MockTransport); pass
            a ``memori_nb.http.KeepAliveClient()`` to keep the default client's connection
            pool, whose cost does not grow with the window (httpx's does), and its short
            path past httpx's client layer. An
            httpx client belongs to the event loop it first connects in: a caller who
            passes one and seeds from several ``asyncio.run`` calls must pass a client per
            loop. By default the backend makes its own, a new one whenever the running
            loop changed, and closes it in :meth:`aclose`.
        timeout: seconds to connect when the backend makes its own client (answers are
            bounded by the engine's ``request_timeout``).
        max_response_bytes: a larger answer fails its request without being read whole.

    Entity and process ids leave the machine only as SHA-256 hex digests.

    Raises:
        MissingApiKeyError: from :meth:`check_ready` / :meth:`augment` when there is no key.

    Example:
        >>> MemoriBackend(api_key="sk-example-key", base_url="http://127.0.0.1:8000")
        MemoriBackend(base_url='http://127.0.0.1:8000', api_key=set)
    """

    name = "memori"
    requires_network = True

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 client: httpx.AsyncClient | None = None,
                 timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        if not (isinstance(max_response_bytes, int) and max_response_bytes > 0):
            raise ConfigurationError(f"max_response_bytes must be a positive integer, got "
                                     f"{max_response_bytes!r}")
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._checked: tuple | None = None  # the settings check_ready last passed
        self._redact = KeyRedactor(self._api_key)
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self._parsed_endpoint: tuple[str, httpx.URL] | None = None
        self._clients = LoopClient(client, lambda: default_client(self.timeout))
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        key = "set" if self._api_key else "missing"
        return f"MemoriBackend(base_url={shown_url(self.base_url)}, api_key={key})"

    @property
    def endpoint(self) -> str:
        """The full URL requests go to."""
        return self.base_url + AUGMENTATION_PATH

    def check_ready(self) -> None:
        """Raise unless an API key and an http(s) base URL are configured.

        Raises:
            MissingApiKeyError: no key.
            ConfigurationError: a key with spaces or non-ASCII characters, or a base URL
                that is not ``http(s)://host...``.
        """
        if not self._api_key:
            raise MissingApiKeyError(
                f"the 'memori' backend needs an API key: set {API_KEY_ENV} (or pass api_key=), "
                f"or use the offline backend (backend='local', or --backend local)")
        check_settings(self._api_key, self.base_url, key_from=API_KEY_ENV,
                       url_from=BASE_URL_ENV, what="augmentation", example=DEFAULT_BASE_URL)

    async def augment(self, request: AugmentationRequest) -> Extraction:
        """Send one request; map the HTTP outcome to an Extraction or an AugmentationError.

        Raises:
            AugmentationError: a subclass saying how to react (see :mod:`memori_nb.errors`);
                its message never holds the API key.
        """
        check_ready_once(self)
        with secrets_kept_out(self._redact):
            return await self._augment(request)

    async def _augment(self, request: AugmentationRequest) -> Extraction:
        cid = request.conversation_id
        context = {"conversation_id": cid}
        try:
            # follow_redirects=False even on a caller's client: a redirect means a wrong base
            # URL, and following it would send the key and a billed request elsewhere.
            async with self._clients.get().stream(
                    "POST", self._url(), content=encode_payload(request),
                    headers={"Authorization": f"Bearer {self._api_key}",
                             "Content-Type": "application/json"},
                    follow_redirects=False) as response:
                context["status_code"] = status = response.status_code
                if status == 200:
                    data, complete = await read_body(response, self.max_response_bytes)
                    if not complete:
                        raise RequestFailedError(
                            f"the answer is larger than max_response_bytes="
                            f"{self.max_response_bytes:,}; it was not kept (raise the limit "
                            f"if the service really sends answers this large)", **context)
                    return parse_extraction(data, self._redact, context)
                data, complete = await read_body(response, ERROR_BODY_BYTES)
                raise self._error_for(response, data, complete, context)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            raise ServiceUnreachableError(
                f"cannot reach the augmentation service at {self.endpoint} "
                f"({type(exc).__name__}: {exc}); check {BASE_URL_ENV} (or base_url=), that "
                f"the service is up, and the network or proxy", **context) from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"request timed out ({type(exc).__name__})",
                                 **context) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise TransientError(f"connection failed: {type(exc).__name__}: {exc}",
                                 **context) from exc
        except httpx.HTTPError as exc:
            raise RequestFailedError(f"request failed: {type(exc).__name__}: {exc}",
                                     **context) from exc

    def _error_for(self, response: httpx.Response, data: bytes, complete: bool,
                   context: dict) -> AugmentationError:
        """The error for a non-200 answer (its body read up to ERROR_BODY_BYTES)."""
        status = response.status_code
        detail = _detail(data, complete, self._redact)
        if 300 <= status < 400 or status in (404, 405):
            where = response.headers.get("location")
            what = (f"redirects to {self._redact(where)}" if where
                    else f"answers {status} {response.reason_phrase}")
            return EndpointError(
                f"{self.endpoint} {what}: the base URL looks wrong; check {BASE_URL_ENV} (or "
                f"base_url=), e.g. {DEFAULT_BASE_URL}", **context)
        if status == 429:
            if "quota" in detail.lower():
                return QuotaExceededError(detail or "quota exceeded", **context)
            return RateLimitedError(detail or "rate limited",
                                    retry_after=retry_after_seconds(response.headers), **context)
        if status == 422:
            return PayloadRejectedError(detail or "payload rejected", **context)
        if status >= 500 or status == 408:
            return TransientError(detail or "server error", **context)
        return RequestFailedError(detail or response.reason_phrase, **context)

    def _url(self) -> httpx.URL:
        """:attr:`endpoint` parsed once (httpx would parse the string on every request)."""
        endpoint = self.endpoint
        if self._parsed_endpoint is None or self._parsed_endpoint[0] != endpoint:
            self._parsed_endpoint = (endpoint, httpx.URL(endpoint))
        return self._parsed_endpoint[1]

    async def aclose(self) -> None:
        """Close the client the backend made (a caller's client is the caller's to close)."""
        await self._clients.aclose()


class KeyRedactor:
    """Hides an API key in text, whole or in part.

    Every token holding the key or a part of it of ``MIN_SECRET_PART`` (8) characters or
    more becomes ``***``. A token is a run of ASCII letters, digits and the key's own
    characters, so a key glued to other text or cut at either end (as by a length limit) is
    still found, and the words around it stay readable. A key shorter than 8 characters
    hides only tokens equal to it: parts that short occur in ordinary words.

    Example:
        >>> redact = KeyRedactor("sk-live-0123456789")
        >>> redact("bad header: Bearer sk-live-0123456789 (or sk-live-01234 cut)")
        'bad header: Bearer *** (or *** cut)'
        >>> KeyRedactor("abc")("abc and abcdef")
        '*** and abcdef'
    """

    def __init__(self, key: str | None) -> None:
        self._key = key or ""
        extra = "".join(sorted({re.escape(c) for c in self._key if not c.isalnum()}))
        self._tokens = re.compile(f"[0-9A-Za-z{extra}]+")
        size = MIN_SECRET_PART
        self._parts = {self._key[i:i + size] for i in range(len(self._key) - size + 1)}
        # No key: nothing to hide, whatever the length (1 << 62 is longer than any text).
        self._shortest = min(len(self._key), size) or 1 << 62

    def __call__(self, text: str) -> str:
        if len(text) < self._shortest:
            return text  # names, types, predicates: too short to hold anything to hide
        if self._parts:
            size = MIN_SECRET_PART
            if len(text) < 2 * size:  # a few set look-ups beat one search per part
                found = any(text[i:i + size] in self._parts for i in range(len(text) - size + 1))
            else:
                found = any(part in text for part in self._parts)
            if not found:
                return text  # the common case
        elif self._key not in text:
            return text
        return self._tokens.sub(self._hide, text)

    def _hide(self, match: re.Match) -> str:
        token = match.group()
        if not self._parts:
            return _HIDDEN if token == self._key else token
        size = MIN_SECRET_PART
        if any(token[i:i + size] in self._parts for i in range(len(token) - size + 1)):
            return _HIDDEN
        return token


def default_client(timeout: float = DEFAULT_CONNECT_TIMEOUT) -> httpx.AsyncClient:
    """The HTTP client the backend makes for itself (create it inside the loop that uses it).

    A :class:`~memori_nb.http.KeepAliveClient`: its transport keeps every connection for
    reuse at a cost that does not grow with their number (httpx's own pool walks them all on
    each request: at a window of 200 that takes most of a core), and its requests skip
    httpx's client layer. The engine's window bounds the connections. Behind a proxy from
    the environment (``HTTPS_PROXY``, ``ALL_PROXY``...) it is httpx's own client and
    transport, which route through it.
    """
    # Only connecting is bounded here: the engine bounds each request with request_timeout.
    timeout = httpx.Timeout(None, connect=timeout)
    # httpx mounts the environment's proxies only when no transport is given.
    if any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies()):
        return httpx.AsyncClient(timeout=timeout)
    return KeepAliveClient(timeout=timeout)


async def read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read a streamed body up to ``limit`` bytes (decoded): ``(data, complete)``.

    Reading stops at the limit, so an endless or huge body never sits in memory whole; a
    ``Content-Length`` over the limit is refused before reading anything.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", False
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            return bytes(data[:limit]), False
    return bytes(data), True


def _detail(data: bytes, complete: bool, redact) -> str:
    """The server's own words from an error body: redacted first, then cut."""
    text = data.decode("utf-8", errors="replace")
    if not complete:
        # Reading stopped mid-body: drop the token it cut, whatever it was part of.
        text = re.sub(r"\S+\Z", "", text)
    detail = text
    try:
        body = json.loads(text) if complete else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        value = next((body[k] for k in ("detail", "message", "error") if body.get(k)), body)
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            value = value["message"]  # OpenAI's {"error": {"message": ...}}
        detail = value if isinstance(value, str) else json.dumps(value)
    elif body is not None:
        detail = json.dumps(body)
    return redact(detail)[:_DETAIL_LIMIT]
