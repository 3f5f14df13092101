"""A loopback HTTP server that speaks Memori's Advanced Augmentation (AA) protocol and
OpenAI-compatible chat completions.

Use it in tests, benchmarks and offline notebooks where the real service is out of reach: it
answers ``POST /v1/sdk/augmentation`` like the cloud does (see DESIGN.md section 2) and
``POST /v1/chat/completions`` like a model server would (structured-output modes it refuses,
fences, ``<think>`` blocks, answers cut at ``max_tokens``, no ``usage``), both with the same
extraction and the same faults; :meth:`AugmentationServer.mock_transport` serves the same rules
in-process for unit tests. Both protocols come from :mod:`memori_nb.protocols`. It can
inject latency and faults (429, 5xx, 422, 404, redirects, dropped connections, malformed
JSON, answers of the wrong shape, endless bodies, request headers echoed back) on demand. It
records every request it receives, so a test can check what a client sent and how many
requests it had in flight at once. :func:`refusing_url` gives an address where nothing
listens, for clients that must cope with a service they cannot reach.

Example:
    >>> import httpx
    >>> from memori_nb.testing import AugmentationServer, Fault, fail_first
    >>> def extract(messages, summary):
    ...     return {"entity": {"triples": [], "facts": []},
    ...             "conversation": {"summary": "hi"}, "process": {"attributes": []}}
    >>> body = {"conversation": {"messages": [{"role": "user", "content": "Hi"}],
    ...                          "summary": None}, "meta": {}}
    >>> with AugmentationServer(extract=extract,
    ...                         faults=fail_first(1, Fault.status(503))) as server:
    ...     first = httpx.post(server.endpoint, json=body)
    ...     second = httpx.post(server.endpoint, json=body)
    >>> first.status_code, second.status_code, server.request_count
    (503, 200, 2)

Without ``extract=``, answers come from the offline extractor in
``memori_nb.backends.local``, so a notebook can run the ``memori`` backend end to end with no
key and no network: point ``MEMORI_API_URL_BASE`` at ``server.url``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

import httpx

from .pricing import estimate_tokens
from .protocols import aa, chat
from .models import Usage
from .protocols.aa import AUGMENTATION_PATH, answer_from_extraction

__all__ = [
    "AugmentationServer",
    "Fault",
    "FaultRule",
    "ReceivedRequest",
    "fail_first",
    "fail_when_content_contains",
    "lognormal_latency",
    "refusing_url",
    "sequence",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STOP_TIMEOUT = 1.0
MALFORMED_BODY = b'{"entity": {"triples": [{"subject": '
ENDLESS_CHUNK = b"x" * 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A failure the server injects instead of (or before) a normal answer.

    Build one with a constructor rather than by hand:

    - ``Fault.status(503)`` — any status code with a JSON ``{"detail": ...}`` body.
    - ``Fault.rate_limited(retry_after=0.05)`` — 429 "slow down", with a ``Retry-After``
      header when given.
    - ``Fault.quota_exceeded()`` — 429 whose body says "Quota exceeded", no ``Retry-After``.
    - ``Fault.reject("too long")`` — 422, the payload is refused.
    - ``Fault.drop()`` — the connection is closed without any response.
    - ``Fault.malformed()`` — 200 with a body that is not valid JSON.
    - ``Fault.answer({"entity": {}})`` — 200 with any JSON body (wrong shapes, say).
    - ``Fault.echo(422, "bad {authorization}")`` — a body in which ``{header-name}`` is
      replaced by that request header, as servers that echo the request do.
    - ``Fault.endless()`` — 200 whose body never ends (until the client hangs up).
    - ``Fault.redirect("https://elsewhere/")`` — a 3xx with a ``Location`` header.
    - ``Fault.delay(2.0)`` — wait 2 s more, then answer normally.
    - ``Fault.truncated()`` — an answer cut short (chat: ``finish_reason: "length"``).

    Example:
        >>> Fault.rate_limited(0.5).headers()
        {'Retry-After': '0.5'}
    """

    # "status", "echo", "drop", "malformed", "endless", "delay" or "truncated"
    kind: str
    code: int | None = None
    body: Any = None
    retry_after: float | None = None
    seconds: float = 0.0
    location: str | None = None
    extra_headers: dict[str, str] | None = None

    @classmethod
    def status(cls, code: int, body: Any = None, retry_after: float | None = None,
               headers: dict[str, str] | None = None) -> Fault:
        """Answer with HTTP ``code`` and a JSON body (default ``{"detail": ...}``), and any
        ``headers`` (``retry-after-ms``, ``x-ratelimit-reset-tokens``...).

        Example:
            >>> Fault.status(429, headers={"retry-after-ms": "250"}).headers()
            {'retry-after-ms': '250'}
        """
        if body is None:
            body = {"detail": f"Injected fault: HTTP {code}"}
        return cls(kind="status", code=code, body=body, retry_after=retry_after,
                   extra_headers=dict(headers) if headers else None)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Fault:
        """429 "slow down"; ``retry_after`` seconds (may be fractional) go in ``Retry-After``.

        Example:
            >>> Fault.rate_limited(0.05).headers()["Retry-After"]
            '0.05'
        """
        return cls.status(429, {"detail": "Too many requests, slow down"}, retry_after)

    @classmethod
    def quota_exceeded(cls) -> Fault:
        """429 with ``{"detail": "Quota exceeded: ..."}`` and no ``Retry-After``.

        Clients tell this from :meth:`rate_limited` by the word "quota" in the body.
        """
        return cls.status(429, {"detail": "Quota exceeded: the augmentation quota for this "
                                          "API key is used up"})

    @classmethod
    def reject(cls, message: str = "Unprocessable payload") -> Fault:
        """422 with ``{"detail": message}``: the server refuses this payload.

        Example:
            >>> Fault.reject("too many messages").body
            {'detail': 'too many messages'}
        """
        return cls.status(422, {"detail": message})

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending anything (the client sees a disconnect)."""
        return cls(kind="drop")

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a truncated body that is not valid JSON."""
        return cls(kind="malformed", code=200)

    @classmethod
    def answer(cls, body: Any) -> Fault:
        """Answer 200 with ``body`` as JSON, whatever its shape.

        Example:
            >>> Fault.answer({"entity": {"facts": "hello"}}).code
            200
        """
        return cls(kind="status", code=200, body=body)

    @classmethod
    def echo(cls, code: int, body: Any) -> Fault:
        """Answer ``code`` with ``body`` after putting request headers into its strings.

        ``{authorization}`` (any lower-case header name in braces) in any string of
        ``body`` becomes that header's value. A string ``body`` is sent as plain text, any
        other value as JSON; with ``code`` 200 it can be a protocol answer.

        Example:
            >>> Fault.echo(422, {"detail": "bad header {authorization}"}).kind
            'echo'
        """
        return cls(kind="echo", code=code, body=body)

    @classmethod
    def endless(cls) -> Fault:
        """Answer 200 with a chunked body that goes on until the client hangs up."""
        return cls(kind="endless", code=200)

    @classmethod
    def redirect(cls, location: str, code: int = 307) -> Fault:
        """Answer ``code`` (a 3xx) with ``Location: location``, as a wrong base URL does.

        Example:
            >>> Fault.redirect("https://example.test/").headers()
            {'Location': 'https://example.test/'}
        """
        return cls(kind="status", code=code, body={"detail": "Moved"}, location=location)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds`` on top of the server's latency, then answer normally."""
        return cls(kind="delay", seconds=float(seconds))

    @classmethod
    def truncated(cls) -> Fault:
        """An answer cut short: on chat completions, half the model's JSON with
        ``finish_reason: "length"`` (as at ``max_tokens``); on AA, a body cut mid-JSON."""
        return cls(kind="truncated", code=200)

    def headers(self) -> dict[str, str]:
        """Extra response headers this fault sends (``Retry-After``, ``Location``, any
        given to :meth:`status`)."""
        headers = dict(self.extra_headers or {})
        if self.retry_after is not None:
            headers["Retry-After"] = format(float(self.retry_after), "g")
        if self.location is not None:
            headers["Location"] = self.location
        return headers


# What a server with a concurrency_limit answers beyond it: 429 without Retry-After.
OVER_CAPACITY = Fault.status(429, {"detail": "Too many requests in flight, slow down"})

FaultRule = Callable[[int, dict], Fault | None]
"""``rule(request_number, body) -> Fault | None``; numbers count from 1 in arrival order."""


def fail_first(n: int, fault: Fault) -> FaultRule:
    """A rule that applies ``fault`` to requests number 1..n, then lets everything through.

    Numbers count every request the server received (see :attr:`AugmentationServer.requests`).

    Example:
        >>> rule = fail_first(2, Fault.status(503))
        >>> [rule(i, {}) is not None for i in (1, 2, 3)]
        [True, True, False]
    """
    return lambda number, body: fault if number <= n else None


def fail_when_content_contains(text: str, fault: Fault) -> FaultRule:
    """A rule that applies ``fault`` whenever any message's content contains ``text``
    (AA's ``conversation.messages``, or chat completions' ``messages``).

    Example:
        >>> rule = fail_when_content_contains("poison", Fault.reject("no"))
        >>> body = {"conversation": {"messages": [{"role": "user", "content": "a poison pill"}]}}
        >>> rule(1, body).code
        422
    """
    def rule(number: int, body: dict) -> Fault | None:
        messages = ((body.get("conversation") or {}).get("messages")
                    or body.get("messages") or [])
        hit = any(isinstance(m, dict) and text in str(m.get("content", "")) for m in messages)
        return fault if hit else None
    return rule


def sequence(*rules: FaultRule | None) -> FaultRule:
    """Combine rules: the first one that returns a fault wins (``None`` rules are skipped).

    Example:
        >>> rule = sequence(fail_first(1, Fault.drop()), fail_first(3, Fault.status(500)))
        >>> [getattr(rule(i, {}), "kind", None) for i in (1, 2, 3, 4)]
        ['drop', 'status', 'status', None]
    """
    active = [r for r in rules if r is not None]

    def rule(number: int, body: dict) -> Fault | None:
        for each in active:
            fault = each(number, body)
            if fault is not None:
                return fault
        return None
    return rule


@contextmanager
def refusing_url(host: str = DEFAULT_HOST) -> Iterator[str]:
    """A base URL on loopback where nothing listens: every connection is refused at once.

    The port stays bound (but not listening) while the ``with`` block runs, so nothing
    else can take it meanwhile.

    Example:
        >>> import httpx
        >>> with refusing_url() as url:
        ...     try:
        ...         httpx.post(url + "/v1/sdk/augmentation", json={})
        ...     except httpx.ConnectError:
        ...         print("refused")
        refused
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield f"http://{host}:{sock.getsockname()[1]}"


def _fill_headers(value: Any, headers: dict[str, str]) -> Any:
    """``value`` with ``{header-name}`` in its strings replaced by the request's headers."""
    if isinstance(value, str):
        return re.sub(r"\{([a-z0-9-]+)\}",
                      lambda m: headers.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: _fill_headers(v, headers) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_headers(v, headers) for v in value]
    return value


def lognormal_latency(median: float, sigma: float, seed: int | None = None
                      ) -> Callable[[], float]:
    """A thread-safe latency sampler: log-normal seconds with the given median.

    Args:
        median: the median latency in seconds (``exp(mu)`` of the distribution).
        sigma: spread of ``log(latency)``; 0 gives ``median`` every time, 0.5 is a typical
            long-tailed service.
        seed: seed for a private ``random.Random``, for reproducible benchmarks.

    Example:
        >>> sample = lognormal_latency(0.2, 0.0, seed=1)
        >>> round(sample(), 3)
        0.2
    """
    rng = random.Random(seed)
    lock = threading.Lock()
    mu = math.log(median)

    def sample() -> float:
        with lock:
            return rng.lognormvariate(mu, sigma)
    return sample


def _local_extract(messages: list[dict], summary: str | None) -> dict:
    # Imported here so this module works before (and without) the local backend.
    from .backends.local import extract
    from .models import Message

    parsed = [Message(role=m["role"], content=m["content"]) for m in messages]
    return answer_from_extraction(extract(parsed, summary))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRequest:
    """One request the server received.

    ``number`` counts from 1 in arrival order; ``body`` is the parsed JSON object (None when
    absent or invalid); ``headers`` has lower-case names; ``fault`` is the fault applied, if
    any; ``received_at`` is ``time.monotonic()`` when the request line arrived; ``served``
    is how many requests the server was answering (not refusing) once this one arrived, this
    one included (0 when it was refused or invalid).
    """

    number: int
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    fault: Fault | None
    received_at: float
    served: int = 0


class _Interrupted(Exception):
    """The server is stopping while this request waits: drop the connection."""


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop()`` can end them promptly."""

    daemon_threads = True
    block_on_close = False  # we join handler threads ourselves, with a deadline
    request_queue_size = 256  # bursts of many new connections must not overflow the backlog

    def __init__(self, address: tuple[str, int], owner: AugmentationServer) -> None:
        self.owner = owner
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup we neither need nor want.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  name=f"augmentation-server-{client_address[1]}", daemon=True)
        # Registered on the accept thread, so after shutdown() every live socket is known.
        with self.connections_lock:
            self.connections[request] = thread
        self.owner._count_connection()
        thread.start()

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.pop(request, None)

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up (or a stop() that cuts them off) are normal here, not news.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> list[threading.Thread]:
        """Wake every handler blocked on its socket; return their threads to join."""
        with self.connections_lock:
            items = list(self.connections.items())
        for sock, _ in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return [thread for _, thread in items]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    disable_nagle_algorithm = True  # small header and body writes must not wait for ACKs
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.server.owner._handle(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST  # noqa: N815

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, code: int, payload: Any, headers: dict[str, str] | None = None,
             raw: bytes | None = None, content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_endless(self, stopping: threading.Event) -> None:
        """A 200 whose chunked body goes on until the client hangs up or the server stops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        chunk = b"%x\r\n%s\r\n" % (len(ENDLESS_CHUNK), ENDLESS_CHUNK)
        self.wfile.write(b'5\r\n{"a":\r\n')
        while not stopping.is_set():
            self.wfile.write(chunk)  # OSError once the client hangs up: the handler ends


class AugmentationServer:
    """A real HTTP server on 127.0.0.1 that answers like Memori's augmentation service, and
    like an OpenAI-compatible chat-completions server.

    Runs on a background thread; use it as a context manager or call :meth:`start` and
    :meth:`stop`. Clients post to ``f"{server.url}/v1/sdk/augmentation"`` (``server.endpoint``)
    for the AA protocol, or to ``f"{server.url}/v1/chat/completions"`` (``base_url``
    ``server.chat_base_url``; ``/chat/completions`` works too) for chat completions, whose
    answers hold the same extraction as the AA ones. :meth:`mock_transport` serves the same
    rules in-process, with no socket, for fast unit tests.

    Args:
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
        latency: seconds to wait before answering each augmentation request: None, a number,
            or a callable returning one (e.g. :func:`lognormal_latency`). Samples are kept in
            :attr:`latencies`.
        faults: ``rule(request_number, body) -> Fault | None`` deciding which requests fail;
            build it with :func:`fail_first`, :func:`fail_when_content_contains`,
            :func:`sequence`. Called under the server's lock, so it may keep state.
        extract: ``extract(messages, summary) -> dict`` producing the 200 response JSON from
            the request's message dicts; default: the offline extractor of
            ``memori_nb.backends.local``. If it raises, the answer is a 500.
        host, port: where to listen; port 0 picks a free port.
        concurrency_limit: the most requests answered at once, as a provider that caps
            requests in flight: beyond it a request is refused at once with 429 "too many
            requests in flight" and no ``Retry-After`` (:attr:`refused_count` counts them).

    Chat completions only:
        refuse_modes: structured-output modes (``memori_nb.protocols.chat.MODES``:
            ``"json_schema"``, ``"json_object_schema"``, ``"json_object"``) answered with
            ``refuse_status`` and an error naming ``response_format``, as servers that do
            not support them do.
        refuse_status: 400 (vLLM, most servers) or 500 (llama-cpp-python's server).
        fences: wrap the model's JSON in a Markdown code fence.
        think: put a ``<think>...</think>`` block (with braces in it) before the JSON.
        usage: send ``usage`` (tokens estimated from characters); False omits it.
        bad_triple: put one unusable triple (an empty subject name) among the good ones.

    Order of checks per request: path and method (404), API key (401), body (AA: 422 if not
    JSON or without ``conversation.messages``; chat: 400), a refused mode, concurrency limit,
    fault rule, latency, then the fault or the answer.
    Every request, whatever its fate, gets a number and a :class:`ReceivedRequest` record.

    Example:
        >>> import httpx
        >>> with AugmentationServer(api_key="k", extract=lambda m, s: {"ok": len(m)}) as server:
        ...     r = httpx.post(server.endpoint, headers={"Authorization": "Bearer k"},
        ...                    json={"conversation": {"messages": []}})
        >>> r.json(), server.requests[0].headers["authorization"]
        ({'ok': 0}, 'Bearer k')
    """

    def __init__(self, *, api_key: str | None = None,
                 latency: float | Callable[[], float] | None = None,
                 faults: FaultRule | None = None,
                 extract: Callable[[list[dict], str | None], dict] | None = None,
                 host: str = DEFAULT_HOST, port: int = 0,
                 concurrency_limit: int | None = None,
                 refuse_modes: Iterable[str] = (), refuse_status: int = 400,
                 fences: bool = False, think: bool = False, usage: bool = True,
                 bad_triple: bool = False) -> None:
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit!r}")
        self.refuse_modes = frozenset(refuse_modes)
        if not self.refuse_modes <= set(chat.MODES):
            raise ValueError(f"refuse_modes must be among {chat.MODES}, got "
                             f"{sorted(self.refuse_modes)}")
        self.refuse_status = refuse_status
        self.fences, self.think, self.usage, self.bad_triple = fences, think, usage, bad_triple
        self.api_key = api_key
        self.concurrency_limit = concurrency_limit
        self.latency = latency
        self.faults = faults
        self.extract = extract or _local_extract
        self._address = (host, port)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[ReceivedRequest] = []
        self._latencies: list[float] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections = 0
        self._served = 0  # requests being answered under concurrency_limit

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AugmentationServer:
        """Bind and start serving on a background thread; returns the server itself.

        Raises:
            RuntimeError: the server is already running.
        """
        if self._httpd is not None:
            raise RuntimeError("AugmentationServer is already running")
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.02}, name="augmentation-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop serving and close every connection, interrupting requests that wait.

        Requests still waiting on latency are dropped (their clients see a disconnect).
        Returns within about ``timeout`` seconds; calling it twice is harmless.
        """
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        httpd.shutdown()  # returns once the accept loop has exited
        handlers = httpd.close_connections()
        httpd.server_close()
        for thread in [self._thread, *handlers]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None

    def __enter__(self) -> AugmentationServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else "stopped"
        return f"<AugmentationServer {where} requests={self.request_count}>"

    # -- what tests look at ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL such as ``http://127.0.0.1:54321`` (the value for ``MEMORI_API_URL_BASE``)."""
        if self._httpd is None:
            raise RuntimeError("AugmentationServer is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def endpoint(self) -> str:
        """The full augmentation URL: ``f"{url}/v1/sdk/augmentation"``."""
        return self.url + AUGMENTATION_PATH

    @property
    def chat_base_url(self) -> str:
        """The ``base_url`` for an OpenAI-compatible client: ``f"{url}/v1"``."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def latencies(self) -> list[float]:
        """Every latency sampled from ``latency`` so far, in seconds (fault delays excluded)."""
        with self._lock:
            return list(self._latencies)

    @property
    def request_count(self) -> int:
        """How many requests the server has received (any path, any outcome)."""
        with self._lock:
            return len(self._requests)

    @property
    def in_flight(self) -> int:
        """How many requests are being handled right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests handled at the same moment: checks a client's concurrency bound."""
        with self._lock:
            return self._max_in_flight

    @property
    def refused_count(self) -> int:
        """How many requests were refused for going over ``concurrency_limit``."""
        with self._lock:
            return sum(r.fault is OVER_CAPACITY for r in self._requests)

    @property
    def connection_count(self) -> int:
        """How many TCP connections were accepted (fewer than requests means keep-alive)."""
        with self._lock:
            return self._connections

    def reset(self) -> None:
        """Forget recorded requests, latencies and counters; numbering restarts at 1."""
        with self._lock:
            self._requests.clear()
            self._latencies.clear()
            self._max_in_flight = self._in_flight
            self._connections = 0

    # -- request handling ------------------------------------------------------------------

    def _count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def _handle(self, handler: _Handler) -> None:
        """Serve one request on a handler thread."""
        received_at = time.monotonic()
        self._enter()
        try:
            try:
                raw = handler.read_body()
            except ValueError:
                handler.close_connection = True
                handler.send(400, {"detail": "Unreadable request body"}, {"Connection": "close"})
                return
            headers = {name.lower(): value for name, value in handler.headers.items()}
            plan = self._plan(handler.command, handler.path.split("?", 1)[0], headers, raw,
                              received_at)
            try:
                # Answer ``delay`` seconds after the request arrived: the server's own work
                # counts inside the latency, so clients are measured against the latency.
                remaining = received_at + plan.delay - time.monotonic()
                if remaining > 0 and self._stopping.wait(remaining):
                    raise _Interrupted
                # Its place is free before the answer leaves: the client may send at once.
                plan.leave()
                reply = plan.reply
                if reply.kind == "drop":
                    raise _Interrupted
                if reply.kind == "endless":
                    handler.send_endless(self._stopping)
                    return
                handler.send(reply.code, None, reply.headers, raw=reply.data,
                             content_type=reply.content_type)
            finally:
                plan.leave()
        except _Interrupted:
            handler.close_connection = True  # send nothing; the socket is closed after us
        finally:
            self._exit()

    def mock_transport(self) -> httpx.MockTransport:
        """An in-process ``httpx.MockTransport`` that answers by this server's rules.

        Same protocols, API key, faults, refused modes, concurrency limit and records as the
        loopback server, without a socket or a thread: for fast unit tests. The server need
        not be started; give clients any base URL (``http://fake.test/v1``, say). A dropped
        connection raises ``httpx.RemoteProtocolError``; latency is waited with
        ``asyncio.sleep``.

        Example:
            >>> import asyncio
            >>> async def post():
            ...     transport = AugmentationServer().mock_transport()
            ...     async with httpx.AsyncClient(transport=transport) as client:
            ...         return (await client.post("http://fake.test/v1/sdk/augmentation",
            ...                 json={"conversation": {"messages": []}})).status_code
            >>> asyncio.run(post())
            200
        """
        async def handle(request: httpx.Request) -> httpx.Response:
            received_at = time.monotonic()
            raw = await request.aread()
            self._enter()
            try:
                headers = {name.lower(): value for name, value in request.headers.items()}
                plan = self._plan(request.method, request.url.path, headers, raw, received_at)
                try:
                    remaining = received_at + plan.delay - time.monotonic()
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                    plan.leave()
                    reply = plan.reply
                    if reply.kind == "drop":
                        raise httpx.RemoteProtocolError(
                            "Server disconnected without sending a response.", request=request)
                    if reply.kind == "endless":
                        return httpx.Response(200, headers={"Content-Type": "application/json"},
                                              stream=_EndlessStream())
                    return httpx.Response(reply.code, content=reply.data, headers={
                        "Content-Type": reply.content_type, **(reply.headers or {})})
                finally:
                    plan.leave()
            finally:
                self._exit()
        return httpx.MockTransport(handle)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _exit(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _plan(self, method: str, path: str, headers: dict[str, str], raw: bytes,
              received_at: float) -> _Plan:
        """Decide one request's fate: its record, its reply, and when to send it."""
        status: tuple[int, str] | None = None
        body: dict | None = None
        call: chat.ChatRequest | None = None
        protocol = ("aa" if path == AUGMENTATION_PATH
                    else "chat" if path in chat.CHAT_PATHS else None)
        if method != "POST" or protocol is None:
            status = (404, f"Not found: {method} {path}")
        elif self.api_key is not None and not hmac.compare_digest(
                headers.get("authorization", "").encode(), f"Bearer {self.api_key}".encode()):
            status = (401, "Invalid or missing API key")
        elif protocol == "aa":
            body, problem = aa.parse_request(raw)
            if problem:
                status = (422, problem)
        else:
            call, problem = chat.parse_request(raw)
            body = call.body if call is not None else None
            if problem:
                status = (400, problem)
            elif call.mode in self.refuse_modes:
                status = (self.refuse_status, f"response_format {call.mode!r} is not supported "
                                              f"by this server (json_schema)")

        fault: Fault | None = None
        delay = 0.0
        served = 0
        rule_error = None
        with self._lock:
            number = len(self._requests) + 1
            limit = self.concurrency_limit
            if status is None and limit is not None and self._served >= limit:
                fault = OVER_CAPACITY  # refused at once, as a capped provider does
            elif status is None:
                if limit is not None:
                    self._served += 1
                    served = self._served
                try:
                    fault = self.faults(number, body) if self.faults else None
                except Exception as exc:  # a broken rule should show up as an answer, not hang
                    rule_error = f"fault rule raised {exc!r}"
                if self.latency is not None:
                    delay = float(self.latency() if callable(self.latency) else self.latency)
                    self._latencies.append(delay)
            self._requests.append(ReceivedRequest(
                number=number, method=method, path=path, headers=headers, body=body,
                fault=fault, received_at=received_at, served=served))
        plan = _Plan(delay=delay, release=self._release if served else None)
        try:
            plan.reply = self._reply(protocol, status, rule_error, fault, body, call, headers)
        except BaseException:
            plan.leave()
            raise
        if fault is not None and fault.kind == "delay":
            plan.delay += fault.seconds
        return plan

    def _release(self) -> None:
        with self._lock:
            self._served -= 1

    def _reply(self, protocol: str | None, status: tuple[int, str] | None,
               rule_error: str | None, fault: Fault | None, body: dict | None,
               call: chat.ChatRequest | None, headers: dict[str, str]) -> _Reply:
        if status is not None:
            extra = {"WWW-Authenticate": "Bearer"} if status[0] == 401 else None
            if protocol == "chat":  # OpenAI's error shape
                return _Reply(status[0], {"error": {"message": status[1],
                                                    "type": "invalid_request_error"}}, extra)
            return _Reply(status[0], {"detail": status[1]}, extra)
        if rule_error:
            return _Reply(500, {"detail": rule_error})
        kind = fault.kind if fault is not None else None
        if kind in (None, "delay", "truncated"):
            if protocol == "aa" and kind == "truncated":
                return _Reply(200, raw=MALFORMED_BODY)
            if protocol == "aa":
                messages, summary = body["conversation"]["messages"], body[
                    "conversation"].get("summary")
            else:
                messages, summary = call.messages, call.summary
            try:
                answer = self.extract(messages, summary)
            except Exception as exc:
                return _Reply(500, {"detail": f"extract failed: {exc!r}"})
            if protocol == "aa":
                return _Reply(200, answer)
            return self._chat_reply(answer, call, truncated=kind == "truncated")
        if kind == "drop":
            return _Reply(kind="drop")
        if kind == "malformed":
            return _Reply(200, raw=MALFORMED_BODY)
        if kind == "endless":
            return _Reply(200, kind="endless")
        if kind == "echo":
            filled = _fill_headers(fault.body, headers)
            if isinstance(filled, str):
                return _Reply(fault.code, raw=filled.encode(), content_type="text/plain")
            return _Reply(fault.code, filled)
        return _Reply(fault.code, fault.body, fault.headers())

    def _chat_reply(self, answer: Any, call: chat.ChatRequest, *, truncated: bool) -> _Reply:
        """A chat completion whose content is ``answer`` (an AA answer is turned into the
        chat schema's object), dressed as this server's options say."""
        content = _chat_content(answer)
        if self.bad_triple and isinstance(content.get("triples"), list):
            triples = content["triples"]
            triples.insert(len(triples) // 2, {
                "subject": {"name": "", "type": "person"}, "predicate": "likes",
                "object": {"name": "nothing", "type": "thing"}})
        text = json.dumps(content, ensure_ascii=False)
        finish = "stop"
        if truncated:
            text, finish = text[:len(text) // 2], "length"
        if self.think:
            text = '<think>The user said a few things; draft: {"triples": [</think>\n' + text
        if self.fences:
            text = f"Here are the memories:\n```json\n{text}\n```"
        usage = (Usage(prompt_tokens=estimate_tokens(call.prompt_characters),
                       completion_tokens=estimate_tokens(len(text))) if self.usage else None)
        return _Reply(200, chat.completion(text, model=call.model, finish_reason=finish,
                                           usage=usage))


def _chat_content(answer: Any) -> Any:
    """The chat schema's object for an AA answer (anything else is sent as it is)."""
    if not (isinstance(answer, dict) and isinstance(answer.get("entity"), dict)):
        return answer
    return {"triples": list(answer["entity"].get("triples") or []),
            "summary": (answer.get("conversation") or {}).get("summary") or "",
            "attributes": list((answer.get("process") or {}).get("attributes") or [])}


@dataclass(slots=True)
class _Reply:
    """What to send: ``payload`` as JSON (or ``raw`` bytes); ``kind`` "drop" sends nothing,
    "endless" a body that never ends."""

    code: int = 200
    payload: Any = None
    headers: dict[str, str] | None = None
    raw: bytes | None = None
    content_type: str = "application/json"
    kind: str = "send"

    @property
    def data(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.payload).encode()


@dataclass(slots=True)
class _Plan:
    """A request's reply, when to send it, and how to free its place under the limit."""

    delay: float
    release: Callable[[], None] | None
    reply: _Reply | None = None

    def leave(self) -> None:
        """Free this request's place under ``concurrency_limit`` (once)."""
        release, self.release = self.release, None
        if release is not None:
            release()


class _EndlessStream(httpx.AsyncByteStream):
    """A body that goes on until the client stops reading."""

    async def __aiter__(self):
        yield b'{"a":'
        while True:
            yield ENDLESS_CHUNK
            await asyncio.sleep(0)
