"""The ``openai`` backend: extraction by your own model over OpenAI-compatible chat completions.

Works with OpenAI and any server that speaks its chat-completions API (vLLM, Ollama,
llama.cpp's ``llama-server``, llama-cpp-python, ...). What is sent and how answers are read
is :mod:`memori_nb.protocols.chat`; this module does the HTTP exchange: structured-output
step-down, error mapping, rate limits and token counts. The API key is hidden, whole or in
part, in every message, repr and stored answer.
"""

from __future__ import annotations

import json
import math
import os
import re

import httpx

from ..errors import (AugmentationError, ConfigurationError, EndpointError, PayloadRejectedError,
                      QuotaExceededError, RateLimitedError, RequestFailedError,
                      ServiceUnreachableError, TransientError)
from ..models import Extraction, Usage
from ..pricing import Pricing, estimate_tokens
from ..protocols import chat
from ..ratelimit import RateLimiter, retry_after_seconds
from .base import (AugmentationRequest, LoopClient, check_ready_once, check_settings,
                   secrets_kept_out, shown_url)
from .memori import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, ERROR_BODY_BYTES,
                     KeyRedactor, _detail, default_client, read_body)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
MODEL_ENV = "OPENAI_MODEL"
CHAT_PATH = "/chat/completions"
# Words in a 400/500 that mean "this response_format is not supported", not "bad request".
_FORMAT_WORDS = ("response_format", "json_schema", "schema", "grammar")
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)



class OpenAIBackend:
    """Extracts facts with a chat model: ``POST {base_url}/chat/completions``.

    Args:
        model: the model name; defaults to ``$OPENAI_MODEL``.
        base_url: defaults to ``$OPENAI_BASE_URL`` or ``https://api.openai.com/v1``; a local
            server's is e.g. ``http://127.0.0.1:8080/v1``.
        api_key: defaults to ``$OPENAI_API_KEY``; may be absent (local servers need none).
            Sent only in the Authorization header; never shown.
        temperature: sampling temperature (0: the most repeatable extraction).
        max_tokens: the longest answer; one cut there (``finish_reason: "length"``) is
            retried, then failed.
        headers: extra request headers (an organization, a gateway's routing key, ...).
        requests_per_minute, tokens_per_minute: client-side limits, enforced before each
            request (tokens estimated from the request, corrected from the answer's usage).
        prompt_price, completion_price: USD per million tokens; give both for
            :attr:`pricing` (the run's cost).
        client: an ``httpx.AsyncClient`` (tests pass one with a MockTransport); by default
            the backend makes its own in each event loop and closes it in :meth:`aclose`.
        timeout: seconds an answer may take (models can be slow; the engine's
            ``SeedConfig.request_timeout`` bounds each request too).

    Structured output: a strict JSON schema first; a server that refuses it (400/500 naming
    the response format, or 422) is asked again at once with the schema inside
    ``json_object``, then with plain ``json_object`` and the schema in the prompt. What works
    is remembered per base URL (:attr:`modes`), so later requests go straight to it.

    Raises:
        ConfigurationError: no model (neither ``model=`` nor ``$OPENAI_MODEL``), a price
            without the other, or a bad limit.

    Example:
        >>> OpenAIBackend(model="gpt-4o-mini", api_key="sk-example", base_url="http://h/v1")
        OpenAIBackend(model='gpt-4o-mini', base_url='http://h/v1')
    """

    name = "openai"
    requires_network = True

    def __init__(self, *, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, temperature: float = 0.0,
                 max_tokens: int = 2048, headers: dict[str, str] | None = None,
                 requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None,
                 prompt_price: float | None = None, completion_price: float | None = None,
                 client: httpx.AsyncClient | None = None, timeout: float = 120.0) -> None:
        self.model = model or os.environ.get(MODEL_ENV)
        if not self.model:
            raise ConfigurationError(f"the 'openai' backend needs a model: pass model= (or "
                                     f"--model), or set {MODEL_ENV}")
        if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
                and math.isfinite(temperature) and temperature >= 0):
            raise ConfigurationError(f"temperature must be a number >= 0, got {temperature!r}")
        if not (isinstance(max_tokens, int) and max_tokens > 0):
            raise ConfigurationError(f"max_tokens must be a positive integer, got "
                                     f"{max_tokens!r}")
        if (prompt_price is None) != (completion_price is None):
            raise ConfigurationError("give both prompt_price and completion_price (USD per "
                                     "million tokens), or neither")
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._checked: tuple | None = None  # the settings check_ready last passed
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._headers = dict(headers or {})  # private: values may be secrets
        # Keys in extra headers (Azure's api-key, a gateway's token) are hidden like the key.
        self._redact = _Redactors([self._api_key] + [
            value for name, value in self._headers.items() if _SECRET_HEADER.search(name)])
        self.pricing = (Pricing(float(prompt_price), float(completion_price))
                        if prompt_price is not None else None)
        # Always there: without limits of our own it still holds requests back while the
        # server's x-ratelimit-remaining-* says nothing is left.
        self.limiter = RateLimiter(requests_per_minute=requests_per_minute,
                                   tokens_per_minute=tokens_per_minute)
        # The structured-output mode that works, per base URL (servers differ).
        self.modes: dict[str, str] = {}
        # Tokens counted by ready() for a request about to be sent, by id(request).
        self._paced: dict[int, int] = {}
        self.timeout = timeout
        self.max_response_bytes = DEFAULT_MAX_RESPONSE_BYTES
        self._clients = LoopClient(client, default_client)

    def __repr__(self) -> str:  # never the key nor the headers, which may hold secrets
        return f"OpenAIBackend(model={self.model!r}, base_url={shown_url(self.base_url)})"

    @property
    def endpoint(self) -> str:
        """The full URL requests go to."""
        return self.base_url + CHAT_PATH

    def prompt_overhead_characters(self) -> int:
        """Characters each request adds around a chunk's messages (the prompt, the schema),
        in the structured-output form this server takes: for token estimates."""
        return chat.prompt_overhead_characters(self.modes.get(self.base_url, chat.MODES[0]))

    def message_overhead_characters(self) -> int:
        """Characters each message adds around its content (role, timestamp, JSON framing):
        for token estimates, which count a timestamp on every message to err high."""
        return chat.message_overhead_characters(timestamp=True)

    def check_ready(self) -> None:
        """Raise unless the base URL is an http(s) address and the key is printable ASCII.

        Raises:
            ConfigurationError: a bad base URL or key (the key itself is not shown).
        """
        check_settings(self._api_key, self.base_url, key_from=API_KEY_ENV,
                       url_from=BASE_URL_ENV, what="chat-completions", example=DEFAULT_BASE_URL)

    async def augment(self, request: AugmentationRequest) -> Extraction:
        """Extract facts from one chunk; map the HTTP outcome to an Extraction or an error.

        Returns:
            The extraction, with ``usage`` from the answer (estimated from characters sent
            and received when the server reports none).

        Raises:
            AugmentationError: a subclass saying how to react (see :mod:`memori_nb.errors`);
                its message never holds the API key.
        """
        check_ready_once(self)
        with secrets_kept_out(self._redact):
            return await self._augment(request)

    async def ready(self, request: AugmentationRequest) -> None:
        """Wait until the client-side limits (``requests_per_minute``, ``tokens_per_minute``,
        the server's ``x-ratelimit-remaining-*``) let ``request`` go. The engine calls it
        before the request's timeout starts: waiting for a limit is not a slow answer."""
        characters = sum(len(m.content) for m in request.messages)
        self._paced[id(request)] = await self.limiter.acquire(
            estimate_tokens(characters + self.prompt_overhead_characters()))

    async def _augment(self, request: AugmentationRequest) -> Extraction:
        context = {"conversation_id": request.conversation_id}
        known = mode = self.modes.get(self.base_url, chat.MODES[0])
        counted = self._paced.pop(id(request), None)
        while True:
            body = chat.build_request(request, model=self.model, mode=mode,
                                      temperature=self.temperature, max_tokens=self.max_tokens)
            prompt_chars = chat.prompt_characters(body)
            if counted is None:  # not paced by ready(), or asked again in another form
                counted = await self.limiter.acquire(estimate_tokens(prompt_chars))
            status, response, data, complete = await self._post(chat.encode_request(body),
                                                                 context)
            self.limiter.observe(response.headers)
            context["status_code"] = status
            if status == 200:
                if not complete:
                    raise RequestFailedError(
                        f"the answer is larger than {self.max_response_bytes:,} bytes; it "
                        f"was not kept", **context)
                try:
                    answer = chat.parse_answer(data, self._redact, context)
                except TransientError as exc:
                    # Generated, so billed, all the same: counted in the totals.
                    exc.usage = _usage_of(data) or Usage(
                        prompt_tokens=estimate_tokens(prompt_chars),
                        completion_tokens=estimate_tokens(len(data)))
                    self.limiter.settle(counted, exc.usage.total_tokens)
                    raise
                usage = answer.extraction.usage or Usage(
                    prompt_tokens=estimate_tokens(prompt_chars),
                    completion_tokens=estimate_tokens(len(answer.content)))
                self.limiter.settle(counted, usage.total_tokens)
                if mode != known:  # a lower form worked: this server gets it from now on
                    self.modes[self.base_url] = mode
                e = answer.extraction
                return Extraction(triples=e.triples, facts=e.facts, summary=e.summary,
                                  attributes=e.attributes, usage=usage,
                                  warnings=tuple(answer.warnings))
            detail = _detail(data, complete, self._redact)
            lower = mode_refused(status, detail)
            if lower and chat.next_mode(mode):
                # Not a failure: the server does not do this form; ask again in the next.
                self.limiter.settle(counted, 0)
                mode, counted = chat.next_mode(mode), None
                continue
            raise self._error_for(response, detail, context)

    async def _post(self, content: bytes, context: dict
                    ) -> tuple[int, httpx.Response, bytes, bool]:
        headers = {**self._headers, "Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            # No redirects: one means a wrong base URL, and following it would send the key
            # elsewhere.
            async with self._clients.get().stream(
                    "POST", self.endpoint, content=content, headers=headers,
                    follow_redirects=False,
                    timeout=httpx.Timeout(self.timeout, connect=DEFAULT_CONNECT_TIMEOUT)
            ) as response:
                limit = (self.max_response_bytes if response.status_code == 200
                         else ERROR_BODY_BYTES)
                data, complete = await read_body(response, limit)
                return response.status_code, response, data, complete
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            raise ServiceUnreachableError(
                f"cannot reach the chat-completions server at {self.endpoint} "
                f"({type(exc).__name__}: {exc}); check {BASE_URL_ENV} (or base_url=) and "
                f"that the server is up", **context) from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"request timed out after {self.timeout:g} s "
                                 f"({type(exc).__name__})", **context) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise TransientError(f"connection failed: {type(exc).__name__}: {exc}",
                                 **context) from exc
        except httpx.HTTPError as exc:
            raise RequestFailedError(f"request failed: {type(exc).__name__}: {exc}",
                                     **context) from exc

    def _error_for(self, response: httpx.Response, detail: str,
                   context: dict) -> AugmentationError:
        status = response.status_code
        if status in (401, 403):
            return RequestFailedError(
                f"the server refused the API key ({detail or response.reason_phrase}); check "
                f"{API_KEY_ENV} (or api_key=)", **context)
        if 300 <= status < 400 or status in (404, 405):
            return EndpointError(
                f"{self.endpoint} answers {status} for model {self.model!r} "
                f"({detail or response.reason_phrase}): check the base URL ({BASE_URL_ENV} or "
                f"base_url=, e.g. {DEFAULT_BASE_URL}) and the model name", **context)
        if status == 429:
            if "quota" in detail.lower():  # OpenAI's insufficient_quota: waiting cannot help
                return QuotaExceededError(detail, **context)
            return RateLimitedError(detail or "rate limited",
                                    retry_after=retry_after_seconds(response.headers),
                                    **context)
        if status == 422:
            return PayloadRejectedError(detail or "payload rejected", **context)
        if status >= 500 or status == 408:
            return TransientError(detail or "server error", **context)
        return RequestFailedError(detail or response.reason_phrase, **context)

    async def aclose(self) -> None:
        """Close the client the backend made (a caller's client is the caller's to close)."""
        await self._clients.aclose()


def _usage_of(data: bytes) -> Usage | None:
    """The ``usage`` a malformed answer still reports, if it is JSON at all."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return chat.parse_usage(body.get("usage")) if isinstance(body, dict) else None


def mode_refused(status: int, detail: str) -> bool:
    """Whether an error answer says the structured-output form is not supported: a 400, 422
    or 500 naming it (llama-cpp-python answers 500).

    Example:
        >>> mode_refused(500, "Unsupported response_format type"), mode_refused(400, "bad")
        (True, False)
    """
    return status in (400, 422, 500) and any(word in detail.lower() for word in _FORMAT_WORDS)


class _Redactors:
    """Hides several secrets: a :class:`KeyRedactor` for each."""

    def __init__(self, secrets: list[str | None]) -> None:
        self._each = [KeyRedactor(secret) for secret in secrets if secret]

    def __call__(self, text: str) -> str:
        for redact in self._each:
            text = redact(text)
        return text
