"""An HTTP/1.1 transport for httpx that costs little per request and whatever its pool size.

httpx's default transport goes through httpcore, anyio and h11: about 1.5 ms of CPU per request
on these machines, most of a seeding client's work, and its pool walks every connection (and,
for each idle one, every connection again) on each request and each response closed: with
200 requests in flight that is ~40,000 steps per event. :class:`KeepAliveTransport` speaks
HTTP/1.1 on asyncio's own protocol callbacks instead: a request's head and body go out in one
write, the answer is parsed where it arrives, and idle connections wait on a stack per origin
(a request takes the most recently used one, or opens one). It is still httpx's interface:
an ``httpx.AsyncClient(transport=...)``, httpx's requests, responses, decoding and errors.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx

__all__ = ["KeepAliveClient", "KeepAliveTransport"]

# An answer's status line and headers larger than this are refused (a broken peer).
MAX_HEAD_BYTES = 256 * 1024
# A request body up to this size goes out in the same write as its head.
ONE_WRITE_BYTES = 256 * 1024


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections reused last-in first-out, at O(1) per request.

    Use it as ``httpx.AsyncClient(transport=KeepAliveTransport())``. There is no cap on
    connections: one is opened whenever a request finds none idle, so bound the requests in
    flight (the engine's ``batch_size`` does). It does not speak to proxies, and a client
    given a transport ignores the environment's proxy settings: behind a proxy, use httpx's
    own transport (:func:`memori_nb.backends.memori.default_client` does). The request's
    ``connect``, ``read`` and ``write`` timeouts apply; errors are httpx's
    (``httpx.ConnectError``, ``httpx.ReadTimeout``, ``httpx.RemoteProtocolError``...).

    Args:
        ssl_context: for https; default ``httpx.create_ssl_context()`` (certifi's roots,
            ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured).
        keepalive_expiry: seconds an idle connection is kept before it is closed.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 keepalive_expiry: float = 5.0) -> None:
        self._ssl_context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple, deque[_Connection]] = {}
        self._open: dict[_Connection, tuple] = {}

    @property
    def connection_count(self) -> int:
        """Connections open now, idle or busy."""
        return len(self._open)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"the URL scheme {url.scheme!r} is not http or https", request=request)
        timeouts = request.extensions.get("timeout") or {}
        connection = await self._connection(url, timeouts.get("connect"), request)
        try:
            await connection.send(request, timeouts.get("write"))
            status, reason, version, headers = await connection.read_head(
                timeouts.get("read"), request)
        except BaseException:
            # Cut off (an error, a timeout, a cancelled task): what the peer sends later
            # belongs to this request, so the connection cannot serve another.
            self._close(connection)
            raise
        body = _Body(self, connection, request, _framing(request, status, headers),
                     timeouts.get("read"), _keeps_alive(request, version, headers))
        return httpx.Response(status_code=status, headers=headers, stream=body,
                              extensions={"http_version": version, "reason_phrase": reason})

    async def _connection(self, url: httpx.URL, timeout: float | None,
                          request: httpx.Request) -> _Connection:
        key = (url.raw_scheme, url.raw_host, url.port)
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            # A connection the server closed meanwhile has seen its end already.
            if (connection.reusable() and now - connection.idle_since < self._keepalive_expiry
                    and connection.peer_is_silent()):
                return connection
            self._close(connection)
        connection = await _Connection.open(url, self._ssl_context, timeout, request)
        self._open[connection] = key
        return connection

    def _release(self, connection: _Connection) -> None:
        """Back on its origin's stack if it can take another request, else closed."""
        key = self._open.get(connection)  # None once the transport was closed
        if key is None or not connection.reusable():
            self._close(connection)
            return
        connection.idle_since = now = time.monotonic()
        idle = self._idle.setdefault(key, deque())
        idle.append(connection)
        # The bottom of the stack waits longest: close it once it has expired, so a burst's
        # surplus connections do not stay open for the whole session.
        if len(idle) > 1 and now - idle[0].idle_since >= self._keepalive_expiry:
            self._close(idle.popleft())

    def _close(self, connection: _Connection) -> None:
        self._open.pop(connection, None)
        connection.close()

    async def aclose(self) -> None:
        connections, self._open, self._idle = list(self._open), {}, {}
        for connection in connections:
            connection.close()


class KeepAliveClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on a :class:`KeepAliveTransport` whose streamed requests go
    straight to the transport.

    httpx's client layer (its auth, cookie, redirect and event-hook steps, none of which
    such a client uses) cost about a quarter of a millisecond of CPU per request here, and
    the response it returns holds a reference cycle that only the garbage collector frees,
    with the request's body: a run kept every body of its last seconds alive. A ``stream``
    call that asks for none of that (no ``auth``, ``cookies``, ``params`` or redirects to
    follow, no event hooks) is sent directly, with the client's headers and its timeout (or
    the call's); any other call, and every other method, is httpx's own.

    Args:
        timeout: as ``httpx.AsyncClient``'s.
        transport: default ``KeepAliveTransport()``.
    """

    def __init__(self, *, timeout: Any = httpx.USE_CLIENT_DEFAULT,
                 transport: KeepAliveTransport | None = None) -> None:
        transport = transport if transport is not None else KeepAliveTransport()
        if timeout is httpx.USE_CLIENT_DEFAULT:
            super().__init__(transport=transport)
        else:
            super().__init__(timeout=timeout, transport=transport)
        self._direct = transport

    def stream(self, method: str, url: httpx.URL | str, *, content: Any = None,
               headers: Any = None, follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
               timeout: Any = httpx.USE_CLIENT_DEFAULT, **kwargs: Any):
        follow = (self.follow_redirects if follow_redirects is httpx.USE_CLIENT_DEFAULT
                  else follow_redirects)
        if kwargs or follow or self.cookies or self.auth or any(self.event_hooks.values()):
            return super().stream(method, url, content=content, headers=headers,
                                  follow_redirects=follow_redirects, timeout=timeout, **kwargs)
        timeout = self.timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)
        return self._direct_stream(method, url, content, headers, timeout)

    @asynccontextmanager
    async def _direct_stream(self, method: str, url: httpx.URL | str, content: Any,
                             headers: Any, timeout: httpx.Timeout
                             ) -> AsyncIterator[httpx.Response]:
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        merged = httpx.Headers(self.headers)
        if headers:
            merged.update(headers)
        request = httpx.Request(method, url, content=content, headers=merged,
                                extensions={"timeout": timeout.as_dict()})
        response = await self._direct.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in a buffer, a future to wait for more."""

    def __init__(self) -> None:
        self.idle_since = 0.0
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future | None = None
        self._drained: asyncio.Future | None = None
        self._ended = False  # the peer closed its side, or the connection is gone
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, url: httpx.URL, context: ssl.SSLContext, timeout: float | None,
                   request: httpx.Request) -> _Connection:
        loop = asyncio.get_running_loop()
        host = url.host
        tls = url.scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    cls, host, url.port or (443 if tls else 80),
                    ssl=context if tls else None, server_hostname=host if tls else None)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host} timed out",
                                       request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return connection

    # --- asyncio's callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended, self._lost = True, exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- used by the transport ------------------------------------------------------------

    def reusable(self) -> bool:
        """Open, and with nothing unasked-for from the peer."""
        return not self._ended and not self._buffer and self._transport is not None \
            and not self._transport.is_closing()

    def peer_is_silent(self) -> bool:
        """Nothing waits to be read: a peer that closed a kept connection while the loop was
        busy has sent its end, which asyncio has not delivered yet."""
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is None:
            return False
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return not poller.poll(0)
        return not select.select([sock], [], [], 0)[0]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._ended = True

    async def send(self, request: httpx.Request, timeout: float | None) -> None:
        url = request.url
        lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        body = _known_body(request)
        if body is not None and not chunked and len(body) <= ONE_WRITE_BYTES:
            self._write(head + body, request)
        else:
            self._write(head, request)
            if body is not None and not chunked:
                self._write(body, request)
            else:
                async for part in request.stream:
                    if part:
                        self._write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part,
                                    request)
                    await self._drain(timeout, request)
                if chunked:
                    self._write(b"0\r\n\r\n", request)
        await self._drain(timeout, request)

    def _write(self, data: bytes, request: httpx.Request) -> None:
        if self._ended or self._transport is None or self._transport.is_closing():
            raise self.ended_error(request, "Server disconnected before the request was sent.")
        self._transport.write(data)

    async def _drain(self, timeout: float | None, request: httpx.Request) -> None:
        if self._drained is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending the request timed out",
                                     request=request) from exc
        if self._ended:
            raise httpx.WriteError("the connection closed while the request was sent",
                                   request=request)

    async def read_head(self, timeout: float | None, request: httpx.Request
                        ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        """The answer's status, reason, version and headers (1xx answers skipped)."""
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("the answer's headers are too large",
                                                    request=request)
                if self._ended:
                    raise self.ended_error(
                        request, "Server disconnected without sending a response.")
                await self.wait(timeout, request)
                end = self._buffer.find(b"\r\n\r\n")
            head = bytes(self._buffer[:end])
            del self._buffer[:end + 4]
            status, reason, version, headers = _parse_head(head, request)
            if not 100 <= status < 200 or status == 101:
                return status, reason, version, headers

    async def wait(self, timeout: float | None, request: httpx.Request) -> None:
        """Until more bytes arrive or the peer closes; httpx.ReadTimeout after ``timeout``."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        expiry = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if expiry is not None:
                expiry.cancel()
        if waiter.result() is _TIMED_OUT:
            raise httpx.ReadTimeout("no answer within the read timeout", request=request)

    def take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def ended_error(self, request: httpx.Request, message: str) -> httpx.TransportError:
        """The error for an answer cut short by the end of the connection."""
        if self._lost is not None:  # reset by the peer, a TLS failure...
            return httpx.ReadError(str(self._lost) or type(self._lost).__name__,
                                   request=request)
        return httpx.RemoteProtocolError(message, request=request)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def find(self, needle: bytes) -> int:
        return self._buffer.find(needle)

    @property
    def ended(self) -> bool:
        return self._ended


_TIMED_OUT = object()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


def _known_body(request: httpx.Request) -> bytes | None:
    """The body when it is already in memory (content=bytes, json=...), else None."""
    try:
        return request.content
    except httpx.RequestNotRead:
        return None


def _parse_head(head: bytes, request: httpx.Request
                ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    try:
        version, status = parts[0], int(parts[1])
    except (IndexError, ValueError):
        raise httpx.RemoteProtocolError(f"not an HTTP answer: {lines[0][:80]!r}",
                                        request=request) from None
    if not version.startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x answer: {lines[0][:80]!r}",
                                        request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"a malformed header line: {line[:80]!r}",
                                            request=request)
        headers.append((name, value.strip()))
    return status, parts[2] if len(parts) > 2 else b"", version, headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _framing(request: httpx.Request, status: int, headers: list[tuple[bytes, bytes]]
             ) -> int | str:
    """How the body ends: a byte count, "chunked", or "close" (at the end of the connection)."""
    if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    encoding = _header(headers, b"transfer-encoding")
    if encoding is not None and encoding.lower().endswith(b"chunked"):
        return "chunked"
    length = _header(headers, b"content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise httpx.RemoteProtocolError(f"a malformed Content-Length: {length[:40]!r}",
                                            request=request)
        return int(length)
    return "close"


def _keeps_alive(request: httpx.Request, version: bytes,
                 headers: list[tuple[bytes, bytes]]) -> bool:
    answer = (_header(headers, b"connection") or b"").lower()
    asked = request.headers.get("connection", "").lower()
    if b"close" in answer or "close" in asked:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in answer


class _Body(httpx.AsyncByteStream):
    """An answer's body, read as it arrives; the connection goes back to the pool when the
    body was read to its end, and is closed when it was not."""

    def __init__(self, transport: KeepAliveTransport, connection: _Connection,
                 request: httpx.Request, framing: int | str, timeout: float | None,
                 keep_alive: bool) -> None:
        self._transport, self._connection, self._request = transport, connection, request
        self._framing, self._timeout = framing, timeout
        self._keep_alive = keep_alive and framing != "close"
        self._complete = framing == 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._framing == "chunked":
            parts = self._chunks()
        elif self._framing == "close":
            parts = self._until_closed()
        else:
            parts = self._counted(self._framing)
        async for part in parts:
            yield part
        self._complete = True

    async def _counted(self, left: int) -> AsyncIterator[bytes]:
        connection, request = self._connection, self._request
        while left:
            if not connection.buffered:
                if connection.ended:
                    raise connection.ended_error(
                        request, "peer closed connection without sending complete "
                                 "message body")
                await connection.wait(self._timeout, request)
                continue
            part = connection.take(left)
            left -= len(part)
            yield part

    async def _until_closed(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.buffered:
                yield connection.take(connection.buffered)
            elif connection.ended:
                return
            else:
                await connection.wait(self._timeout, self._request)

    async def _chunks(self) -> AsyncIterator[bytes]:
        request = self._request
        while True:
            line = await self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"a malformed chunk size: {line[:40]!r}",
                                                request=request) from None
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                return
            async for part in self._counted(size):
                yield part
            if await self._line():
                raise httpx.RemoteProtocolError("a chunk longer than its size",
                                                request=request)

    async def _line(self) -> bytes:
        connection = self._connection
        while (end := connection.find(b"\r\n")) < 0:
            if connection.buffered > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("a chunk header is too long",
                                                request=self._request)
            if connection.ended:
                raise connection.ended_error(self._request, "peer closed connection without "
                                                            "sending complete message body")
            await connection.wait(self._timeout, self._request)
        line = connection.take(end + 2)
        return line[:-2]

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete and self._keep_alive:
            self._transport._release(connection)
        else:
            self._transport._close(connection)
