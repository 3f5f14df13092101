"""Issue 9, the memori backend against the real loopback server: event loops (point 3),
unreachable services and wrong endpoints (6), answers of the wrong shape or size (7), and
the API key echoed back (8)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from memori_nb.backends.base import AugmentationRequest
from memori_nb.backends.memori import MemoriBackend
from memori_nb.errors import (AugmentationError, EndpointError, PayloadRejectedError,
                              RequestFailedError, ServiceUnreachableError, TransientError)
from memori_nb.models import Extraction, Message
from memori_nb.retry import RetryState
from memori_nb.testing import AugmentationServer, Fault, fail_first, refusing_url, sequence

from helpers import API_KEY

REQUEST = AugmentationRequest(entity_id="user-1", conversation_id="c1",
                              messages=(Message(role="user", content="I live in Porto."),))


def key_parts(text: str, key: str = API_KEY, size: int = 8) -> set[str]:
    """Every part of ``key`` of ``size`` characters that occurs in ``text``."""
    return {key[i:i + size] for i in range(len(key) - size + 1)} & {
        text[i:i + size] for i in range(len(text) - size + 1)}


def augment(url: str, request: AugmentationRequest = REQUEST, **kwargs):
    """One augment() in a fresh event loop; returns the Extraction or the raised error."""
    async def go():
        backend = MemoriBackend(**{"api_key": API_KEY, "base_url": url, **kwargs})
        try:
            return await backend.augment(request)
        except AugmentationError as error:
            return error
        finally:
            await backend.aclose()
    return asyncio.run(go())


# --- point 3: one backend, several event loops ----------------------------------------------

def test_one_backend_works_in_one_event_loop_after_another(server):
    backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
    results = [asyncio.run(backend.augment(REQUEST)) for _ in range(3)]
    assert all(isinstance(r, Extraction) and r.facts for r in results)
    assert server.request_count == 3  # each request sent (and billed) once
    asyncio.run(backend.aclose())  # closing from yet another loop is harmless


def test_a_backend_closed_in_its_loop_works_again_in_the_next(server):
    backend = MemoriBackend(api_key=API_KEY, base_url=server.url)

    async def use_and_close():
        try:
            return await backend.augment(REQUEST)
        finally:
            await backend.aclose()

    assert asyncio.run(use_and_close()).facts and asyncio.run(use_and_close()).facts
    assert server.request_count == 2


def test_a_callers_client_is_used_as_given_and_left_open(server):
    async def go():
        async with httpx.AsyncClient() as client:
            backend = MemoriBackend(api_key=API_KEY, base_url=server.url, client=client)
            extraction = await backend.augment(REQUEST)
            await backend.aclose()
            assert not client.is_closed
            return extraction

    assert asyncio.run(go()).facts and server.request_count == 1


# --- point 6: a service that cannot be reached, a wrong endpoint ----------------------------

def test_a_refused_connection_names_the_url_and_what_to_check():
    with refusing_url() as url:
        started = time.monotonic()
        error = augment(url)
    assert time.monotonic() - started < 1.0
    assert type(error) is ServiceUnreachableError
    assert f"{url}/v1/sdk/augmentation" in str(error) and "MEMORI_API_URL_BASE" in str(error)


def test_an_unreachable_service_stops_after_a_few_quick_retries():
    # What the engine does with RetryState: a couple of short waits, then the run stops.
    with refusing_url() as url:
        state, waits = RetryState(clock=time.monotonic), []
        while (decision := state.decide(augment(url), max_retries=3, retry_delay=1.0,
                                        jitter=0.0)).action == "retry":
            waits.append(decision.delay)
    assert decision.action == "stop_run" and url in decision.reason
    assert len(waits) == 2 and sum(waits) <= 2.0


def test_a_base_url_with_a_wrong_path_gets_a_clear_404(server):
    error = augment(server.url + "/api")
    assert type(error) is EndpointError and error.status_code == 404
    assert f"{server.url}/api/v1/sdk/augmentation answers 404" in str(error)
    assert "MEMORI_API_URL_BASE" in str(error)


def test_a_redirect_is_an_endpoint_error_and_is_never_followed():
    with AugmentationServer(api_key=API_KEY) as elsewhere, AugmentationServer(
            api_key=API_KEY, faults=lambda n, body: Fault.redirect(elsewhere.endpoint)) as server:
        error = augment(server.url)

        async def with_a_following_client():
            async with httpx.AsyncClient(follow_redirects=True) as client:
                backend = MemoriBackend(api_key=API_KEY, base_url=server.url, client=client)
                with pytest.raises(EndpointError):
                    await backend.augment(REQUEST)

        asyncio.run(with_a_following_client())
        assert elsewhere.request_count == 0  # neither the key nor a billed request went there
        assert f"redirects to {elsewhere.endpoint}" in str(error)
    assert type(error) is EndpointError and error.status_code == 307


def test_per_kind_budgets_against_the_server():
    # 503, 503, 429, 429, then an answer: with 2 transient retries the request still succeeds.
    faults = sequence(fail_first(2, Fault.status(503)), fail_first(4, Fault.rate_limited(0.01)))
    with AugmentationServer(api_key=API_KEY, faults=faults) as server:
        state, outcome = RetryState(clock=time.monotonic), None
        while not isinstance(outcome := augment(server.url), Extraction):
            decision = state.decide(outcome, max_retries=2, retry_delay=0.0, jitter=0.0)
            assert decision.action == "retry", decision
        assert server.request_count == 5
    assert dict(state.counts) == {"transient": 2, "rate_limited": 2}


# --- point 7: answers of the wrong shape, answers too large ---------------------------------

@pytest.mark.parametrize("body", [
    {"entity": {}},
    {"entity": {"facts": "hello"}},
    {"entity": {"triples": [{"subject": {"name": None}, "predicate": "is",
                             "object": {"name": "x"}}]}},
    {"entity": {"triples": ["user likes tea"]}},
    {"entity": {"facts": []}, "conversation": {"summary": ["not", "a", "string"]}},
])
def test_a_200_of_the_wrong_shape_is_malformed(body):
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: Fault.answer(body)) as server:
        error = augment(server.url)
    assert type(error) is TransientError and "malformed response body" in str(error)


def test_an_endless_body_fails_at_the_cap_without_reading_it_all():
    with AugmentationServer(api_key=API_KEY, faults=fail_first(1, Fault.endless())) as server:
        started = time.monotonic()
        error = augment(server.url, max_response_bytes=1024 * 1024)
        assert time.monotonic() - started < 2.0
        assert isinstance(augment(server.url), Extraction)  # the server is fine afterwards
    assert type(error) is RequestFailedError and error.status_code == 200
    assert "max_response_bytes=1,048,576" in str(error)


def test_a_declared_length_over_the_cap_is_refused_before_reading(server):
    error = augment(server.url, max_response_bytes=50)
    assert type(error) is RequestFailedError and "larger than max_response_bytes=50" in str(error)
    assert isinstance(augment(server.url, max_response_bytes=10_000), Extraction)


def test_a_huge_error_body_is_read_only_in_part():
    huge = Fault.status(503, {"detail": "overloaded " + "x" * 5_000_000})
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: huge) as server:
        error = augment(server.url)
    assert type(error) is TransientError and len(str(error)) < 400


# --- point 8: the API key echoed back ---------------------------------------------------------

@pytest.mark.parametrize("sep", [" ", ""])
@pytest.mark.parametrize("pad", range(270, 302, 3))
def test_a_key_echoed_in_an_error_body_near_the_cut_never_shows(pad, sep):
    fault = Fault.echo(422, {"detail": "p" * pad + sep + "{authorization} and more"})
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: fault) as server:
        error = augment(server.url)
    assert type(error) is PayloadRejectedError
    assert not key_parts(str(error)) and not key_parts(repr(error))


@pytest.mark.parametrize("code", [500, 400, 429])
def test_a_key_echoed_in_a_plain_text_error_never_shows(code):
    fault = Fault.echo(code, "x" * 250 + " upstream rejected {authorization} for this request")
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: fault) as server:
        error = augment(server.url)
    assert not key_parts(str(error)) and "upstream rejected" in str(error)


def test_a_key_echoed_in_a_200_answer_is_hidden():
    answer = {"entity": {"triples": [{"subject": {"name": "user", "type": "person"},
                                      "predicate": "sent",
                                      "object": {"name": "{authorization}", "type": "text"}}],
                         "facts": ["The user's header was {authorization}"]},
              "conversation": {"summary": "auth: {authorization}"},
              "process": {"attributes": ["{authorization}"]}}
    with AugmentationServer(api_key=API_KEY, faults=lambda n, b: Fault.echo(200, answer)) \
            as server:
        extraction = augment(server.url)
    assert not key_parts(repr(extraction))
    assert extraction.facts == ("The user's header was Bearer ***",)
    assert extraction.summary == "auth: Bearer ***"


def test_a_short_key_is_hidden_without_garbling_the_message():
    fault = Fault.echo(422, {"detail": "abc is not a valid key; abcdef and cabbage are words"})
    with AugmentationServer(faults=lambda n, b: fault) as server:
        error = augment(server.url, api_key="abc")
    assert str(error) == "HTTP 422: *** is not a valid key; abcdef and cabbage are words"
