"""The retry decision: one small pure function of the failure and the attempt number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import (AugmentationError, QuotaExceededError, RateLimitedError, TransientError)

Action = Literal["retry", "give_up", "stop_run"]

# Upper bound on a single wait, so a bogus Retry-After cannot park a run for hours.
MAX_WAIT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``retry`` after ``delay`` seconds, ``give_up`` on this conversation, or ``stop_run``."""

    action: Action
    delay: float = 0.0
    reason: str = ""


def decide_retry(error: Exception, attempt: int, *, max_retries: int, retry_delay: float,
                 jitter: float) -> RetryDecision:
    """Decide what to do after ``attempt`` failed attempts (1 after the first failure).

    - transient failures (5xx, timeouts, dropped connections): exponential backoff from
      ``retry_delay`` (x2 each time) plus up to 50% jitter, then give up;
    - 429 with Retry-After: wait what the server asked; without it, back off like transient;
      429s that outlast ``max_retries`` stop the run (the quota is likely gone);
    - 429 quota exhausted: stop the run at once (slowing down cannot help);
    - 422 and other client errors, and anything unexpected: give up on this conversation.

    Args:
        error: the exception the attempt raised.
        attempt: how many attempts have failed so far (>= 1).
        max_retries: retries allowed after the first attempt.
        retry_delay: first backoff, in seconds.
        jitter: a number in [0, 1) (random in the engine, fixed in tests).

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
    if isinstance(error, RateLimitedError):
        if attempt > max_retries:
            return RetryDecision("stop_run", reason=f"still rate limited after {max_retries} "
                                                    f"retries ({reason})")
        delay = backoff if error.retry_after is None else min(error.retry_after,
                                                              MAX_WAIT_SECONDS)
        return RetryDecision("retry", delay, reason)
    if isinstance(error, TransientError) and attempt <= max_retries:
        return RetryDecision("retry", backoff, reason)
    if not isinstance(error, AugmentationError):
        reason = f"{type(error).__name__}: {reason}"
    return RetryDecision("give_up", reason=reason)
