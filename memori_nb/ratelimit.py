"""Client-side rate limits, and what providers' rate-limit headers say.

:class:`RateLimiter` keeps a run under a requests-per-minute and a tokens-per-minute limit
before each request is sent (tokens are estimated then, and corrected from the answer's
``usage``), and holds every request while the server says a limit is used up
(``x-ratelimit-remaining-*: 0``) until it resets. The header readers serve both HTTP
backends: ``Retry-After`` (seconds), ``retry-after-ms``, and OpenAI's
``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` durations (``6m0s``, ``1.5s``,
``20ms``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigurationError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a duration such as ``6m0s``, ``1.5s``, ``20ms``, ``1h2m`` or a bare
    number of seconds; None when unreadable.

    Example:
        >>> parse_duration("6m0s"), parse_duration("1.5s"), parse_duration("20ms")
        (360.0, 1.5, 0.02)
    """
    if text is None:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long a 429 asks the client to wait, in seconds; None when it does not say.

    ``retry-after-ms`` (the most precise) wins over ``Retry-After`` in seconds (an HTTP date
    is ignored: rare for APIs, and our own backoff does as well); without either, the reset
    of the used-up ``x-ratelimit-*`` limit (or the later of both when none says which).

    Example:
        >>> retry_after_seconds({"x-ratelimit-reset-tokens": "1.5s"})
        1.5
    """
    headers = {k.lower(): v for k, v in headers.items()}
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    seconds = headers.get("retry-after")
    if seconds is not None:
        try:
            return max(0.0, float(seconds))
        except ValueError:
            pass
    return exhausted_for(headers, assume_exhausted=True)


def exhausted_for(headers: Mapping[str, str], *, assume_exhausted: bool = False
                  ) -> float | None:
    """Seconds until a used-up limit resets: the ``x-ratelimit-reset-*`` of every limit whose
    ``x-ratelimit-remaining-*`` is 0 (with ``assume_exhausted``, of every limit that gives no
    remaining count either); None when no limit is used up.

    Example:
        >>> exhausted_for({"x-ratelimit-remaining-requests": "0",
        ...                "x-ratelimit-reset-requests": "20ms",
        ...                "x-ratelimit-remaining-tokens": "900",
        ...                "x-ratelimit-reset-tokens": "6m0s"})
        0.02
    """
    headers = {k.lower(): v for k, v in headers.items()}
    waits = []
    for limit in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{limit}")
        used_up = remaining.strip() == "0" if remaining is not None else assume_exhausted
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{limit}"))
        if used_up and reset is not None:
            waits.append(reset)
    return max(waits) if waits else None


class RateLimiter:
    """Paces requests under requests- and tokens-per-minute limits, fairly and without polling.

    Each limit is a bucket that holds a minute's worth and refills continuously, so a run
    starts at once and then settles at the limit. Requests wait their turn in arrival order
    (one :class:`asyncio.Lock`, which wakes waiters first come, first served), sleeping
    exactly as long as the buckets need.

    Args:
        requests_per_minute: None for no request limit.
        tokens_per_minute: None for no token limit. A request bigger than the whole minute's
            budget waits for a full bucket rather than forever.
        clock, sleep: injectable for tests (``time.monotonic`` and ``asyncio.sleep``).

    Example:
        >>> limiter = RateLimiter(requests_per_minute=60)
        >>> asyncio.run(limiter.acquire(10))
        10
    """

    def __init__(self, *, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        for name, value in (("requests_per_minute", requests_per_minute),
                            ("tokens_per_minute", tokens_per_minute)):
            if value is not None and not (isinstance(value, (int, float))
                                          and not isinstance(value, bool) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.clock, self.sleep = clock, sleep
        self._requests = float(requests_per_minute or 0)
        self._tokens = float(tokens_per_minute or 0)
        self._updated: float | None = None
        self._hold_until = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (f"RateLimiter(requests_per_minute={self.requests_per_minute!r}, "
                f"tokens_per_minute={self.tokens_per_minute!r})")

    async def acquire(self, tokens: int) -> int:
        """Wait until a request of about ``tokens`` tokens may go, and count it.

        Returns:
            The tokens counted, to pass to :meth:`settle` once the real number is known.
        """
        async with self._turn():
            while (wait := self._wait(tokens)) > 1e-9:  # float rounding is not a wait
                await self.sleep(wait)
            self._refill()
            if self.requests_per_minute:
                self._requests -= 1
            if self.tokens_per_minute:
                self._tokens -= tokens
        return tokens

    def settle(self, counted: int, actual: int) -> None:
        """Correct the token count of a request: ``counted`` at :meth:`acquire`, ``actual``
        from the answer's ``usage`` (more waits longer for the next ones, fewer gives back)."""
        if self.tokens_per_minute:
            self._refill()
            self._tokens = min(self._tokens + counted - actual, float(self.tokens_per_minute))

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a limit the server says is used up until its reset)."""
        self._hold_until = max(self._hold_until, self.clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Hold requests while the server's ``x-ratelimit-remaining-*`` says 0, until reset."""
        wait = exhausted_for(headers)
        if wait:
            self.hold(wait)

    def _turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # A lock belongs to the loop it first waits in; a new asyncio.run gets a new one.
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def _refill(self) -> None:
        now = self.clock()
        if self._updated is not None:
            elapsed = max(0.0, now - self._updated)
            if self.requests_per_minute:
                self._requests = min(float(self.requests_per_minute),
                                     self._requests + elapsed * self.requests_per_minute / 60)
            if self.tokens_per_minute:
                self._tokens = min(float(self.tokens_per_minute),
                                   self._tokens + elapsed * self.tokens_per_minute / 60)
        self._updated = now

    def _wait(self, tokens: int) -> float:
        """Seconds until a request of ``tokens`` tokens fits (0: now)."""
        self._refill()
        waits = [self._hold_until - self._updated]
        if self.requests_per_minute:
            waits.append((1 - self._requests) * 60 / self.requests_per_minute)
        if self.tokens_per_minute:
            need = min(float(tokens), float(self.tokens_per_minute))
            waits.append((need - self._tokens) * 60 / self.tokens_per_minute)
        return max(waits)
