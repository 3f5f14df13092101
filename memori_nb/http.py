"""An httpx transport whose connection pool costs the same whatever its size.

httpx's default pool (httpcore's ``AsyncConnectionPool``) walks every connection, and for
each idle one every connection again, on each request and each response closed: with 200
requests in flight that is ~40,000 steps per event, a CPU-bound event loop, late reads, and
hundreds of extra connections. :class:`KeepAliveTransport` keeps a stack of idle connections
per origin instead: a request takes the most recently used one (or opens one), a closed
response puts it back. HTTP/1.1 itself is httpcore's, unchanged; the caller (the engine's
window) bounds how many connections are open.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import AsyncIterator

import httpcore
import httpx

__all__ = ["KeepAliveTransport"]

# httpcore's transport errors; _httpx_error raises httpx's error of the same name instead.
_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
           httpcore.ProxyError, httpcore.UnsupportedProtocol)


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections reused last-in first-out, at O(1) per request.

    Use it as ``httpx.AsyncClient(transport=KeepAliveTransport())``. There is no cap on
    connections: one is opened whenever a request finds none idle, so bound the requests in
    flight (the engine's ``batch_size`` does). It does not speak to proxies, and a client
    given a transport ignores the environment's proxy settings: behind a proxy, use httpx's
    own transport (:func:`memori_nb.backends.memori.default_client` does).

    Args:
        ssl_context: for https; default ``httpx.create_ssl_context()`` (certifi's roots,
            ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured).
        keepalive_expiry: seconds an idle connection is kept before it is closed.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 keepalive_expiry: float = 5.0) -> None:
        self._ssl_context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._keepalive_expiry = keepalive_expiry
        # Keyed by (scheme, host, port): httpcore.Origin is not hashable.
        self._idle: dict[tuple, deque[httpcore.AsyncHTTPConnection]] = {}
        self._open: dict[httpcore.AsyncHTTPConnection, tuple] = {}

    @property
    def connection_count(self) -> int:
        """Connections open now, idle or busy."""
        return len(self._open)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                             target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        connection = await self._connection(core.url.origin)
        try:
            response = await connection.handle_async_request(core)
        except BaseException as exc:
            await self._release(connection)
            if isinstance(exc, _ERRORS):
                raise _httpx_error(exc, request) from exc
            raise
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Body(response.stream, self, connection, request),
                              extensions=response.extensions)

    async def _connection(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        key = (origin.scheme, origin.host, origin.port)
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            # has_expired also notices a connection the server has closed meanwhile.
            if connection.is_idle() and not connection.has_expired():
                return connection
            await self._close(connection)
        connection = httpcore.AsyncHTTPConnection(
            origin=origin, ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry)
        self._open[connection] = key
        return connection

    async def _release(self, connection: httpcore.AsyncHTTPConnection) -> None:
        """Back on its origin's stack if it can take another request, else closed."""
        key = self._open.get(connection)  # None once the transport was closed
        if key is None or not connection.is_idle():
            await self._close(connection)
            return
        idle = self._idle.setdefault(key, deque())
        idle.append(connection)
        # The bottom of the stack waits longest: close it once it has expired, so a burst's
        # surplus connections do not stay open for the whole session.
        if len(idle) > 1 and idle[0].has_expired():
            await self._close(idle.popleft())

    async def _close(self, connection: httpcore.AsyncHTTPConnection) -> None:
        self._open.pop(connection, None)
        await connection.aclose()

    async def aclose(self) -> None:
        connections, self._open, self._idle = list(self._open), {}, {}
        for connection in connections:
            await connection.aclose()


class _Body(httpx.AsyncByteStream):
    """A response body that hands its connection back when closed."""

    def __init__(self, stream, transport: KeepAliveTransport,
                 connection: httpcore.AsyncHTTPConnection, request: httpx.Request) -> None:
        self._stream, self._transport = stream, transport
        self._connection, self._request = connection, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except _ERRORS as exc:
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await self._stream.aclose()
        finally:
            await self._transport._release(connection)


def _httpx_error(exc: Exception, request: httpx.Request) -> httpx.TransportError:
    """httpx's exception of the same name (httpx.ReadTimeout for httpcore.ReadTimeout...)."""
    kind = getattr(httpx, type(exc).__name__, None)
    if not (isinstance(kind, type) and issubclass(kind, httpx.TransportError)):
        kind = httpx.TransportError
    return kind(str(exc), request=request)
