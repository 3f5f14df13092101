"""The retry decision: back off, wait what the server asked, give up, or stop the run."""

import pytest

from memori_nb.errors import (EndpointError, PayloadRejectedError, QuotaExceededError,
                              RateLimitedError, RequestFailedError, ServiceUnreachableError,
                              TransientError)
from memori_nb.retry import (MAX_WAIT_SECONDS, RATE_LIMIT_BUDGET_SECONDS, UNREACHABLE_RETRIES,
                             RetryDecision, RetryState, decide_retry, failure_kind)


def decide(error, attempt, *, max_retries=3, retry_delay=1.0, jitter=0.0,
           **budget) -> RetryDecision:
    return decide_retry(error, attempt, max_retries=max_retries, retry_delay=retry_delay,
                        jitter=jitter, **budget)


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
def test_without_a_clock_429s_beyond_max_retries_stop_the_run(retry_after):
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


# --- a budget per kind of failure (issue 9) -------------------------------------------------

def limited(retry_after=None):
    return RateLimitedError("slow down", retry_after=retry_after, status_code=429)


def test_each_failure_draws_on_its_own_budget():
    assert failure_kind(TransientError("503")) == "transient"
    assert failure_kind(limited()) == "rate_limited"
    assert failure_kind(ServiceUnreachableError("refused")) == "unreachable"
    assert failure_kind(PayloadRejectedError("bad")) == failure_kind(ValueError()) == "other"


@pytest.mark.parametrize("attempt", [1, 5, 50])
def test_a_429_with_retry_after_is_waited_out_within_the_time_budget(attempt):
    decision = decide(limited(7.0), attempt, max_retries=0, rate_limited_for=100.0)
    assert decision == RetryDecision("retry", 7.0, "HTTP 429: slow down")


def test_429s_that_outlast_the_time_budget_stop_the_run():
    decision = decide(limited(7.0), 3, rate_limited_for=RATE_LIMIT_BUDGET_SECONDS)
    assert decision.action == "stop_run"
    assert "still rate limited after 600 s" in decision.reason and "run again later" in \
        decision.reason


def test_a_retry_after_longer_than_the_budget_left_stops_the_run_at_once():
    decision = decide(limited(3600.0), 1, rate_limited_for=0.0)
    assert decision.action == "stop_run" and "asks to wait 3600 s" in decision.reason
    assert decide(limited(60.0), 1, rate_limited_for=550.0).action == "stop_run"


def test_the_last_backoff_ends_with_the_budget():
    assert decide(limited(), 9, rate_limited_for=590.0).delay == pytest.approx(10.0)
    assert decide(limited(), 1, rate_limit_budget=0.5, rate_limited_for=0.0).delay == 0.5


def test_a_zero_retry_after_backs_off_instead_of_hammering():
    assert [decide(limited(0.0), a, rate_limited_for=0.0).delay for a in (1, 2, 3)] == [
        1.0, 2.0, 4.0]


def test_an_unreachable_service_gets_a_few_quick_retries_then_stops_the_run():
    error = ServiceUnreachableError("cannot reach http://127.0.0.1:9/v1/sdk/augmentation")
    decisions = [decide(error, a, max_retries=10, retry_delay=5.0) for a in (1, 2, 3)]
    assert [d.action for d in decisions] == ["retry"] * UNREACHABLE_RETRIES + ["stop_run"]
    assert sum(d.delay for d in decisions) <= 2.0  # seconds in all, not per conversation
    assert "http://127.0.0.1:9" in decisions[-1].reason
    assert decide(error, 1, max_retries=0).action == "stop_run"


def test_a_wrong_endpoint_stops_the_run_at_once():
    error = EndpointError("http://x/v1/sdk/augmentation answers 404 Not Found: check ...",
                          status_code=404)
    decision = decide(error, 1)
    assert decision.action == "stop_run" and "answers 404" in decision.reason


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_one_429_after_two_5xx_does_not_stop_the_run():
    state = RetryState(clock=Clock())
    actions = [state.decide(error, max_retries=2, retry_delay=1.0, jitter=0.0).action
               for error in (TransientError("503"), TransientError("503"), limited(1.0),
                             TransientError("503"))]
    assert actions == ["retry", "retry", "retry", "give_up"]  # the 3rd 5xx outlasts 2 retries
    assert state.attempts == 4 and dict(state.counts) == {"transient": 3, "rate_limited": 1}


def test_retry_state_measures_the_rate_limit_budget_from_the_first_429():
    clock = Clock()
    state = RetryState(clock=clock)
    decide_now = lambda error: state.decide(error, max_retries=3, retry_delay=1.0,  # noqa
                                            jitter=0.0)
    clock.now = 100.0
    assert decide_now(TransientError("503")).action == "retry"
    assert state.rate_limited_since is None
    assert decide_now(limited(30.0)).delay == 30.0
    assert state.rate_limited_since == 100.0
    clock.now = 100.0 + RATE_LIMIT_BUDGET_SECONDS - 10
    assert decide_now(limited(30.0)).action == "stop_run"  # 30 s would outlast the budget
    clock.now = 100.0 + RATE_LIMIT_BUDGET_SECONDS
    assert decide_now(limited()).action == "stop_run"
