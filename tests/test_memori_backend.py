"""The memori backend over a MockTransport: payload, parsing, status mapping, no key leaks."""

import asyncio
import hashlib
import json

import httpx
import pytest

from memori_nb.backends.base import AugmentationBackend, AugmentationRequest
from memori_nb.backends.memori import MemoriBackend
from memori_nb.errors import (AugmentationError, MissingApiKeyError, PayloadRejectedError,
                              QuotaExceededError, RateLimitedError, RequestFailedError,
                              TransientError)
from memori_nb.models import Extraction, Message, Triple
from memori_nb.retry import decide_retry

KEY = "sk-test-0123456789abcdef"

REQUEST = AugmentationRequest(
    entity_id="user-123", process_id="agent-7", conversation_id="conv-1",
    summary="Earlier: the user said hello.",
    messages=(Message(role="user", content="I just bought a Tesla Model 3!", timestamp="t1"),
              Message(role="assistant", content="Congratulations!")))

RESPONSE = {
    "entity": {
        "triples": [{"subject": {"name": "user", "type": "person"}, "predicate": "owns",
                     "object": {"name": "Tesla Model 3", "type": "product"}},
                    {"subject": {"name": "user"}, "predicate": "likes",
                     "object": {"name": "cars", "type": None}}],
        "facts": ["The user owns a Tesla Model 3"]},
    "conversation": {"summary": "The user bought a Tesla."},
    "process": {"attributes": ["congratulates users"]},
}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def augment(handler, request=REQUEST, **backend_kwargs):
    """Run one augment() against ``handler``; returns the Extraction or the raised error."""
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            backend = MemoriBackend(client=client, **{"api_key": KEY, **backend_kwargs})
            try:
                return await backend.augment(request)
            finally:
                await backend.aclose()
    try:
        return asyncio.run(go())
    except AugmentationError as error:
        return error


def respond(status=200, **kwargs):
    return lambda request: httpx.Response(status, **kwargs)


def test_it_is_an_augmentation_backend():
    backend = MemoriBackend(api_key=KEY)
    assert isinstance(backend, AugmentationBackend)
    assert backend.name == "memori" and backend.requires_network


def test_the_request_has_the_documented_shape():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json=RESPONSE)

    augment(handler, base_url="https://aa.example.test/")
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "https://aa.example.test/v1/sdk/augmentation"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body["conversation"] == {
        "messages": [{"role": "user", "content": "I just bought a Tesla Model 3!"},
                     {"role": "assistant", "content": "Congratulations!"}],
        "summary": "Earlier: the user said hello."}
    meta = body["meta"]
    assert meta["attribution"] == {"entity": {"id": sha("user-123")},
                                   "process": {"id": sha("agent-7")}}
    assert meta["sdk"]["lang"] == "python" and meta["sdk"]["version"]
    assert meta["storage"]["cockroachdb"] is False
    assert {"framework", "llm", "platform"} <= meta.keys()
    raw = request.content.decode()
    assert "user-123" not in raw and "agent-7" not in raw


def test_no_process_and_no_summary_are_null():
    seen = []
    request = AugmentationRequest(entity_id="u", conversation_id="c",
                                  messages=(Message(role="user", content="hi"),))

    def handler(http_request):
        seen.append(json.loads(http_request.content))
        return httpx.Response(200, json={"entity": {}})

    assert augment(handler, request) == Extraction()
    assert seen[0]["meta"]["attribution"]["process"] == {"id": None}
    assert seen[0]["conversation"]["summary"] is None


def test_the_response_is_parsed_into_an_extraction():
    extraction = augment(respond(json=RESPONSE))
    assert extraction == Extraction(
        triples=(Triple(subject_name="user", subject_type="person", predicate="owns",
                        object_name="Tesla Model 3", object_type="product"),
                 Triple(subject_name="user", subject_type="unknown", predicate="likes",
                        object_name="cars", object_type="unknown")),
        facts=("The user owns a Tesla Model 3",),
        summary="The user bought a Tesla.",
        attributes=("congratulates users",))


def test_facts_come_from_the_triples_when_the_response_has_none():
    body = {"entity": {"triples": RESPONSE["entity"]["triples"]}}
    extraction = augment(respond(json=body))
    assert extraction.facts == ("user owns Tesla Model 3", "user likes cars")
    assert extraction.summary is None and extraction.attributes == ()


@pytest.mark.parametrize(("response", "error_type", "status"), [
    (httpx.Response(429, json={"detail": "Monthly quota exceeded"}), QuotaExceededError, 429),
    (httpx.Response(429, json={"detail": "Too many requests"}), RateLimitedError, 429),
    (httpx.Response(422, json={"detail": "messages[0].content too long"}),
     PayloadRejectedError, 422),
    (httpx.Response(500, text="Internal Server Error"), TransientError, 500),
    (httpx.Response(503, json={"message": "try later"}), TransientError, 503),
    (httpx.Response(408), TransientError, 408),
    (httpx.Response(401, json={"detail": "invalid api key"}), RequestFailedError, 401),
    (httpx.Response(403), RequestFailedError, 403),
    (httpx.Response(404, text="not found"), RequestFailedError, 404),
])
def test_status_codes_map_to_errors(response, error_type, status):
    error = augment(lambda request: response)
    assert type(error) is error_type
    assert error.status_code == status and error.conversation_id == "conv-1"
    assert str(error).startswith(f"HTTP {status}: ")


def test_rate_limited_carries_retry_after():
    error = augment(respond(429, headers={"Retry-After": "2"}, json={"detail": "slow down"}))
    assert type(error) is RateLimitedError
    assert error.retry_after == 2.0
    assert decide_retry(error, 1, max_retries=3, retry_delay=1.0, jitter=0.0).delay == 2.0


def test_rate_limited_with_a_date_retry_after_has_none():
    error = augment(respond(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert type(error) is RateLimitedError and error.retry_after is None


def test_payload_rejected_shows_the_server_detail():
    error = augment(respond(422, json={"detail": [{"loc": ["body", "conversation"],
                                                   "msg": "field required"}]}))
    assert type(error) is PayloadRejectedError
    assert "field required" in str(error) and "conversation" in str(error)


@pytest.mark.parametrize("response", [
    httpx.Response(200, text="<html>gateway hiccup</html>"),
    httpx.Response(200, text=""),
    httpx.Response(200, json={"conversation": {"summary": "no entity"}}),
    httpx.Response(200, json=["entity"]),
    httpx.Response(200, json={"entity": None}),
    httpx.Response(200, json={"entity": {"triples": [{"predicate": "owns"}]}}),
])
def test_a_malformed_success_is_transient_never_empty(response):
    error = augment(lambda request: response)
    assert type(error) is TransientError
    assert error.status_code == 200 and "malformed response" in str(error)


@pytest.mark.parametrize("exc", [httpx.ConnectError("connection refused"),
                                 httpx.ReadTimeout("timed out"),
                                 httpx.ConnectTimeout("timed out"),
                                 httpx.RemoteProtocolError("peer closed connection")])
def test_transport_failures_are_transient(exc):
    def handler(request):
        raise exc

    error = augment(handler)
    assert type(error) is TransientError
    assert error.conversation_id == "conv-1" and error.status_code is None
    assert isinstance(error.__cause__, type(exc))


def test_a_corrupt_compressed_body_is_transient():
    error = augment(respond(200, content=b"not gzip", headers={"content-encoding": "gzip"}))
    assert type(error) is TransientError


def test_a_missing_api_key_names_the_variable_and_the_local_backend(monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    backend = MemoriBackend()
    assert "missing" in repr(backend)
    with pytest.raises(MissingApiKeyError) as caught:
        backend.check_ready()
    assert "MEMORI_API_KEY" in str(caught.value) and "backend='local'" in str(caught.value)
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(200, json=RESPONSE)

    with pytest.raises(MissingApiKeyError):
        augment(handler, api_key=None)
    assert calls == []


def test_the_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMORI_API_KEY", KEY)
    seen = []

    def handler(request):
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json=RESPONSE)

    augment(handler, api_key=None)
    assert seen == [f"Bearer {KEY}"]


def test_the_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMORI_API_URL_BASE", "http://127.0.0.1:8765/")
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, json=RESPONSE)

    augment(handler)
    assert seen == ["http://127.0.0.1:8765/v1/sdk/augmentation"]
    assert MemoriBackend(api_key=KEY).base_url == "http://127.0.0.1:8765"


def test_the_default_base_url(monkeypatch):
    monkeypatch.delenv("MEMORI_API_URL_BASE", raising=False)
    assert MemoriBackend(api_key=KEY).base_url == "https://api.memorilabs.ai"


@pytest.mark.parametrize("handler", [
    respond(429, json={"detail": "quota exceeded"}),
    respond(429, headers={"Retry-After": "1"}),
    respond(422, json={"detail": "bad payload"}),
    respond(500),
    respond(401, json={"detail": "unauthorized"}),
    respond(200, text="oops"),
    respond(200, json={"nothing": True}),
])
def test_the_api_key_never_appears_in_errors(handler):
    error = augment(handler)
    assert isinstance(error, AugmentationError)
    assert KEY not in str(error) and KEY not in repr(error)


def test_the_api_key_never_appears_in_transport_errors():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    error = augment(handler)
    assert KEY not in str(error) and KEY not in repr(error)


def test_repr_never_shows_the_api_key():
    backend = MemoriBackend(api_key=KEY, base_url="https://aa.example.test")
    assert KEY not in repr(backend) and KEY not in str(backend)
    assert "api_key=set" in repr(backend) and "aa.example.test" in repr(backend)


def test_a_server_echoing_the_key_does_not_leak_it_into_errors():
    async def go():
        def handler(request):
            return httpx.Response(422, json={"detail": f"bad header {request.headers['authorization']}"})
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        backend = MemoriBackend(api_key="sk-echo-secret", base_url="http://aa.test", client=client)
        try:
            await backend.augment(AugmentationRequest(
                entity_id="u", conversation_id="c",
                messages=(Message(role="user", content="hi"),)))
        finally:
            await client.aclose()

    with pytest.raises(PayloadRejectedError) as info:
        asyncio.run(go())
    assert "sk-echo-secret" not in str(info.value) and "***" in str(info.value)
