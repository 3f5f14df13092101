"""The retry decision: one small pure function of the failure, with a budget per kind.

Each kind of failure has its own budget, so one kind never uses up another's:

- ``transient`` (5xx, timeouts, dropped connections, malformed answers): ``max_retries``
  retries with exponential backoff, then this conversation gives up;
- ``rate_limited`` (429 "slow down"): waited out (the server's Retry-After, or backoff) for
  up to ``RATE_LIMIT_BUDGET_SECONDS`` per request, then the run stops; meanwhile the engine
  holds every request for a Retry-After, and sends fewer at once after a 429 without one;
- ``unreachable`` (connection refused, DNS): ``UNREACHABLE_RETRIES`` quick retries, then the
  run stops, since every other request would fail the same way;
- anything else is decided at its first failure (quota, wrong endpoint, refused key: the run
  stops; 422 and other client errors: this conversation gives up).

:class:`RetryState` keeps the per-request counts and the rate-limit clock for a caller that
loops over attempts (the engine).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .errors import (AugmentationError, EndpointError, QuotaExceededError, RateLimitedError,
                     ServiceUnreachableError, TransientError)

Action = Literal["retry", "give_up", "stop_run"]
Kind = Literal["transient", "rate_limited", "unreachable", "other"]

# Upper bound on a single wait, so a bogus Retry-After cannot park a run for hours.
MAX_WAIT_SECONDS = 300.0
# How long one request may stay rate limited before the run stops (the quota is likely gone).
RATE_LIMIT_BUDGET_SECONDS = 600.0
# An unreachable service gets this many quick retries (a restart, a blip), each wait capped.
UNREACHABLE_RETRIES = 2
UNREACHABLE_MAX_WAIT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``retry`` after ``delay`` seconds, ``give_up`` on this conversation, or ``stop_run``."""

    action: Action
    delay: float = 0.0
    reason: str = ""


def failure_kind(error: Exception) -> Kind:
    """Which retry budget ``error`` draws on.

    Example:
        >>> failure_kind(RateLimitedError("slow down", retry_after=1.0))
        'rate_limited'
    """
    if isinstance(error, RateLimitedError):
        return "rate_limited"
    if isinstance(error, ServiceUnreachableError):
        return "unreachable"
    if isinstance(error, TransientError):
        return "transient"
    return "other"


def decide_retry(error: Exception, attempt: int, *, max_retries: int, retry_delay: float,
                 jitter: float, rate_limited_for: float | None = None,
                 rate_limit_budget: float = RATE_LIMIT_BUDGET_SECONDS) -> RetryDecision:
    """Decide what to do after a request failed with ``error``.

    - transient failures: exponential backoff from ``retry_delay`` (x2 each time) plus up to
      50% jitter, at most ``max_retries`` times, then give up on this conversation;
    - 429 "slow down": wait the server's Retry-After (or back off) while the request has been
      rate limited for less than ``rate_limit_budget`` seconds, then stop the run; a
      Retry-After longer than what is left of the budget stops the run at once;
    - unreachable service: up to ``UNREACHABLE_RETRIES`` short waits, then stop the run;
    - quota exhausted, wrong endpoint (404/3xx), refused key (401/403): stop the run;
    - 422, other client errors and anything unexpected: give up on this conversation.

    Args:
        error: the exception the attempt raised.
        attempt: failed attempts of this request *of the same kind* as ``error``
            (see :func:`failure_kind`), this one included (>= 1).
        max_retries: retries allowed for transient failures.
        retry_delay: first backoff, in seconds.
        jitter: a number in [0, 1) (random in the engine, fixed in tests).
        rate_limited_for: seconds since this request's first 429. None when the caller does
            not track time: 429s then get ``max_retries`` retries, as transient failures do.
        rate_limit_budget: how long a request may stay rate limited.

    Example:
        >>> decide_retry(TransientError("503"), 1, max_retries=3, retry_delay=1.0, jitter=0.0)
        RetryDecision(action='retry', delay=1.0, reason='503')
    """
    backoff = min(retry_delay * 2 ** (attempt - 1) * (1 + jitter / 2), MAX_WAIT_SECONDS)
    reason = str(error)
    if isinstance(error, AugmentationError) and error.status_code in (401, 403):
        return RetryDecision("stop_run", reason=f"the API key was refused ({reason})")
    if isinstance(error, QuotaExceededError):
        return RetryDecision("stop_run", reason=f"quota exhausted ({reason})")
    if isinstance(error, EndpointError):
        return RetryDecision("stop_run", reason=reason)
    if isinstance(error, RateLimitedError):
        return _decide_rate_limited(error, attempt, backoff, max_retries, rate_limited_for,
                                    rate_limit_budget)
    if isinstance(error, ServiceUnreachableError):
        if attempt > min(max_retries, UNREACHABLE_RETRIES):
            return RetryDecision("stop_run", reason=reason)
        return RetryDecision("retry", min(backoff, UNREACHABLE_MAX_WAIT_SECONDS), reason)
    if isinstance(error, TransientError) and attempt <= max_retries:
        return RetryDecision("retry", backoff, reason)
    if not isinstance(error, AugmentationError):
        reason = f"{type(error).__name__}: {reason}"
    return RetryDecision("give_up", reason=reason)


def _decide_rate_limited(error: RateLimitedError, attempt: int, backoff: float,
                         max_retries: int, limited_for: float | None,
                         budget: float) -> RetryDecision:
    reason = str(error)
    # "Retry-After: 0" says nothing about when; back off rather than hammer the service.
    asked = error.retry_after if error.retry_after else None
    delay = min(backoff if asked is None else asked, MAX_WAIT_SECONDS)
    if limited_for is None:  # a caller without a clock: count attempts instead of time
        if attempt > max_retries:
            return RetryDecision("stop_run", reason=f"still rate limited after {max_retries} "
                                                    f"retries ({reason})")
        return RetryDecision("retry", delay, reason)
    left = budget - limited_for
    if left <= 0:
        return RetryDecision("stop_run", reason=f"still rate limited after {limited_for:.0f} s "
                                                f"({reason}); run again later")
    if asked is not None and asked > left:
        return RetryDecision("stop_run", reason=f"rate limited: the service asks to wait "
                                                f"{asked:g} s ({reason}); run again later")
    # The last wait ends when the budget does, so no request stays limited for longer.
    return RetryDecision("retry", min(delay, left), reason)


@dataclass(slots=True)
class RetryState:
    """The failed attempts of one request, counted per kind, and when its 429s began.

    The engine keeps one per request and asks it after every failure.

    Args:
        clock: seconds, monotonic (the engine's injectable clock).

    Example:
        >>> state = RetryState(clock=lambda: 0.0)
        >>> state.decide(TransientError("503"), max_retries=3, retry_delay=1.0, jitter=0.0)
        RetryDecision(action='retry', delay=1.0, reason='503')
        >>> state.attempts
        1
    """

    clock: Callable[[], float]
    counts: Counter = field(default_factory=Counter)
    rate_limited_since: float | None = None

    @property
    def attempts(self) -> int:
        """Failed attempts of every kind so far."""
        return sum(self.counts.values())

    def decide(self, error: Exception, *, max_retries: int, retry_delay: float,
               jitter: float, rate_limit_budget: float = RATE_LIMIT_BUDGET_SECONDS
               ) -> RetryDecision:
        """Record the failure ``error`` and return :func:`decide_retry`'s decision."""
        kind = failure_kind(error)
        self.counts[kind] += 1
        now = self.clock()
        if kind == "rate_limited" and self.rate_limited_since is None:
            self.rate_limited_since = now
        limited_for = 0.0 if self.rate_limited_since is None else now - self.rate_limited_since
        return decide_retry(error, self.counts[kind], max_retries=max_retries,
                            retry_delay=retry_delay, jitter=jitter,
                            rate_limited_for=limited_for, rate_limit_budget=rate_limit_budget)
