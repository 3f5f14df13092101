"""The one small interface every augmentation backend implements."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from ..errors import AugmentationError, ConfigurationError
from ..models import Extraction, Message

try:
    import resource
except ImportError:  # Windows: no open-file limit to read
    resource = None

# Files a run holds besides its connections: stdin/out/err, the event loop's selector and
# wake-up pipe, the store's (DuckDB's database and WAL; SQLite's database, journal, WAL and
# shared memory), the journal, name look-ups on the executor's threads, and what the host
# keeps open (a Jupyter kernel's ZeroMQ sockets, some 20-30). A CLI run used about 13.
OTHER_OPEN_FILES = 64


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

    A backend may also have ``async ready(request)``, waiting until its own rate limits let
    the request go: the engine awaits it before the request's timeout starts. One whose
    answers hold only text from the request's messages (validated: storable), and each
    triple, fact and attribute once, may say so with ``clean_answers = True``: the engine
    then does not check them.

    One backend object may serve several event loops one after another (each ``asyncio.run``
    of a seed): anything bound to a loop, such as an HTTP client, is made again when the
    running loop changed.
    """

    name: str
    requires_network: bool

    async def augment(self, request: AugmentationRequest) -> Extraction: ...

    async def aclose(self) -> None: ...


def check_settings(api_key: str | None, base_url: str, *, key_from: str, url_from: str,
                   what: str, example: str) -> None:
    """Refuse, before anything is sent, a key that cannot go in a header as it is, or a base
    URL that is not ``http(s)://host...``; neither the key nor a base URL that does not start
    with http(s):// (a key pasted in the wrong setting, say) is shown.

    Raises:
        ConfigurationError: naming where the setting came from (``key_from``, ``url_from``).
    """
    if api_key and (api_key != api_key.strip() or not api_key.isascii()
                    or not api_key.isprintable()):
        raise ConfigurationError(
            f"the API key (from {key_from} or api_key=) has spaces, line breaks or "
            f"non-ASCII characters; check how it was copied (it is not shown here)")
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        if not _http_like(base_url):
            raise ConfigurationError(
                f"the {what} base URL (from {url_from} or base_url=) does not start with "
                f"http:// or https://; set an address such as {example} (the value is not "
                f"shown: it may be a key pasted in the wrong place)")
        raise ConfigurationError(
            f"the {what} base URL {base_url!r} (from {url_from} or base_url=) is not an "
            f"http(s) address such as {example}")


def shown_url(base_url: str) -> str:
    """``base_url`` quoted, for a repr, when it starts with http(s)://; otherwise a note in
    its place: a value that is no URL may be an API key in the wrong setting."""
    return repr(base_url) if _http_like(base_url) else "<not an http(s) URL, not shown>"


def _http_like(base_url: str) -> bool:
    return str(base_url).lower().startswith(("http://", "https://"))


@contextmanager
def secrets_kept_out(redact: Callable[[str], str]) -> Iterator[None]:
    """The last guard of a backend's ``augment``: an AugmentationError leaving the block has
    its message passed through ``redact``, so whatever went into it, the key does not travel
    on."""
    try:
        yield
    except AugmentationError as exc:
        exc.message = redact(exc.message)
        exc.args = (exc.message,)
        raise


class LoopClient:
    """The httpx client for the running event loop: the caller's, used as given, or one made
    by ``make`` anew in each loop. A client's pooled connections belong to the loop that
    opened them: one left from an earlier ``asyncio.run`` would send on a closed loop, and it
    cannot be closed from the new one either (dropping it lets its sockets go)."""

    def __init__(self, given: httpx.AsyncClient | None,
                 make: Callable[[], httpx.AsyncClient]) -> None:
        self._client, self._make, self._owned = given, make, given is None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        if not self._owned:
            return self._client
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make(), loop
        return self._client

    async def aclose(self) -> None:
        """Close the client made here (a caller's client is the caller's to close)."""
        if not self._owned or self._client is None:
            return
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if loop is asyncio.get_running_loop():  # a client of a closed loop cannot be closed
            await client.aclose()


def check_ready_once(backend: Any) -> None:
    """``backend.check_ready()`` the first time, and again only when its key or base URL
    changed: not on every request (parsing the URL each time cost 1.5% of a run's CPU)."""
    settings = (backend._api_key, backend.base_url)
    if backend._checked != settings:
        backend.check_ready()
        backend._checked = settings


def ensure_ready(backend: object, batch_size: int | None = None) -> None:
    """Raise if ``backend`` cannot send (its ``check_ready()``, for a backend that has one),
    or cannot keep ``batch_size`` requests in flight (:func:`open_files_problem`).

    Raises:
        MissingApiKeyError: no API key.
        ConfigurationError: a malformed key or base URL; a window over the open-file limit.
    """
    check_ready = getattr(backend, "check_ready", None)
    if check_ready is not None:
        check_ready()
    problem = open_files_problem(backend, batch_size) if batch_size is not None else None
    if problem:
        raise ConfigurationError(problem)


def readiness_problem(backend: object, batch_size: int | None = None) -> str | None:
    """Why ``backend`` cannot send (:func:`ensure_ready` refuses: no API key, a bad URL, a
    window over the open-file limit), or None when it can. Sends nothing."""
    try:
        ensure_ready(backend, batch_size)
    except ConfigurationError as exc:  # MissingApiKeyError is one
        return str(exc)
    return None


def open_files_problem(backend: object, batch_size: int) -> str | None:
    """Why a window of ``batch_size`` requests would run out of open files (one connection
    each, plus :data:`OTHER_OPEN_FILES`, over the process's soft RLIMIT_NOFILE), or None.
    Connections refused with "Too many open files" would count as failures, and could leave
    answered requests unsaved (billed again next run). Only for a backend that connects."""
    if resource is None or not getattr(backend, "requires_network", True):
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = batch_size + OTHER_OPEN_FILES
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    lower = (f"use batch_size={soft - OTHER_OPEN_FILES} or less, or "
             if soft > OTHER_OPEN_FILES else "")
    return (f"batch_size={batch_size} keeps up to {batch_size} connections open, but this "
            f"process may open only {soft} files (its open-file limit), some "
            f"{OTHER_OPEN_FILES} of them for the store, the journal and the rest: {lower}"
            f"raise the limit (ulimit -n {needed} in the shell that starts the run)")


def reachability_problem(backend: object, *, timeout: float = 3.0) -> str | None:
    """Why ``backend``'s server cannot be reached (a TCP connection to its ``base_url``'s
    host and port fails, or gets no answer within ``timeout`` seconds, name lookup
    included), or None when it can, or when that cannot be told from here (no ``base_url``,
    or a proxy in between). Opens and closes a connection; sends no request."""
    url = getattr(backend, "base_url", None)
    if not url or not getattr(backend, "requires_network", True):
        return None
    parts = urllib.parse.urlsplit(str(url))
    host, scheme = parts.hostname, parts.scheme
    proxies = urllib.request.getproxies()
    if not host or ((proxies.get(scheme) or proxies.get("all"))
                    and not urllib.request.proxy_bypass(host)):
        return None  # through a proxy only the proxy answers; the run will tell
    address = (host, parts.port or (443 if scheme == "https" else 80))
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    # On a thread: a name lookup takes no timeout, and may take far longer than this one.
    probe = threading.Thread(target=connect, name="memori_nb-reach", daemon=True)
    probe.start()
    probe.join(timeout)
    where = f"{scheme}://{parts.netloc}"
    if not outcome:
        return f"cannot reach {where}: no answer within {timeout:g} s"
    if outcome[0] is not None:
        return f"cannot reach {where}: {outcome[0].strerror or type(outcome[0]).__name__}"
    return None
