"""The retry decision: back off, wait what the server asked, give up, or stop the run."""

import pytest

from memori_nb.errors import (PayloadRejectedError, QuotaExceededError, RateLimitedError,
                              RequestFailedError, TransientError)
from memori_nb.retry import MAX_WAIT_SECONDS, RetryDecision, decide_retry


def decide(error, attempt, *, max_retries=3, retry_delay=1.0, jitter=0.0) -> RetryDecision:
    return decide_retry(error, attempt, max_retries=max_retries, retry_delay=retry_delay,
                        jitter=jitter)


def test_transient_backs_off_exponentially_then_gives_up():
    error = TransientError("server error", conversation_id="c1", status_code=503)
    decisions = [decide(error, attempt) for attempt in (1, 2, 3, 4)]
    assert [(d.action, d.delay) for d in decisions] == [
        ("retry", 1.0), ("retry", 2.0), ("retry", 4.0), ("give_up", 0.0)]
    assert all("HTTP 503" in d.reason for d in decisions)


def test_backoff_starts_from_retry_delay():
    assert decide(TransientError("x"), 3, retry_delay=0.5).delay == 2.0


def test_no_retries_allowed_gives_up_at_once():
    assert decide(TransientError("x"), 1, max_retries=0).action == "give_up"


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999])
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_jitter_adds_at_most_half_the_backoff(jitter, attempt):
    base = 2.0 ** (attempt - 1)
    delay = decide(TransientError("x"), attempt, jitter=jitter).delay
    assert base <= delay <= base * 1.5
    assert delay == pytest.approx(base * (1 + jitter / 2))


def test_rate_limited_with_retry_after_waits_exactly_that():
    error = RateLimitedError("slow down", retry_after=7.0, status_code=429)
    for attempt in (1, 2, 3):
        assert decide(error, attempt, jitter=0.9) == RetryDecision("retry", 7.0, str(error))


def test_rate_limited_without_retry_after_backs_off():
    error = RateLimitedError("slow down", status_code=429)
    assert [decide(error, attempt).delay for attempt in (1, 2, 3)] == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("retry_after", [None, 2.0])
def test_rate_limited_beyond_max_retries_stops_the_run(retry_after):
    decision = decide(RateLimitedError("slow down", retry_after=retry_after), 4)
    assert decision.action == "stop_run"
    assert "rate limited after 3 retries" in decision.reason and "slow down" in decision.reason


def test_quota_exceeded_stops_the_run_at_once():
    decision = decide(QuotaExceededError("monthly quota used up", status_code=429), 1)
    assert decision.action == "stop_run" and decision.delay == 0.0
    assert "quota" in decision.reason and "monthly quota used up" in decision.reason


@pytest.mark.parametrize("error", [
    PayloadRejectedError("messages too long", status_code=422),
    RequestFailedError("not found", status_code=404),
])
def test_client_errors_give_up_at_the_first_attempt(error):
    decision = decide(error, 1)
    assert decision == RetryDecision("give_up", 0.0, str(error))
    assert str(error.status_code) in decision.reason


def test_an_unexpected_exception_gives_up_naming_its_type():
    decision = decide(ValueError("bad things"), 1)
    assert decision.action == "give_up"
    assert decision.reason == "ValueError: bad things"


def test_waits_are_capped():
    assert decide(TransientError("x"), 3, retry_delay=1000.0).delay == MAX_WAIT_SECONDS
    assert decide(TransientError("x"), 30, max_retries=50).delay == MAX_WAIT_SECONDS
    huge = RateLimitedError("slow down", retry_after=86_400.0)
    assert decide(huge, 1).delay == MAX_WAIT_SECONDS


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_run(status):
    decision = decide_retry(RequestFailedError("bad key", status_code=status), 1,
                            max_retries=3, retry_delay=1.0, jitter=0.0)
    assert decision.action == "stop_run" and "API key was refused" in decision.reason
