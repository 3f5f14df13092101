"""The memori backend over a MockTransport: payload, parsing, status mapping, no key leaks."""

import asyncio
import hashlib
import json

import httpx
import pytest

from memori_nb import Memori, SeedData
from memori_nb.backends.base import AugmentationBackend, AugmentationRequest
from memori_nb.backends.memori import KeyRedactor, MemoriBackend
from memori_nb.errors import (AugmentationError, ConfigurationError, EndpointError,
                              MissingApiKeyError, PayloadRejectedError, QuotaExceededError,
                              RateLimitedError, RequestFailedError, ServiceUnreachableError,
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
        return httpx.Response(200, json={"entity": {"triples": [], "facts": []}})

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
    (httpx.Response(400, text="bad request"), RequestFailedError, 400),
    (httpx.Response(404, text="not found"), EndpointError, 404),
    (httpx.Response(405), EndpointError, 405),
    (httpx.Response(301, headers={"Location": "https://elsewhere.test/"}), EndpointError, 301),
    (httpx.Response(307, headers={"Location": "/v2/"}), EndpointError, 307),
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


TRIPLE = {"subject": {"name": "user", "type": "person"}, "predicate": "owns",
          "object": {"name": "a bike", "type": "product"}}


def with_triple(**changes):
    return {"entity": {"triples": [{**TRIPLE, **changes}]}}


@pytest.mark.parametrize(("body", "where"), [
    ({"conversation": {"summary": "no entity"}}, "entity is missing"),
    (["entity"], "the answer is a list"),
    ({"entity": None}, "entity is null"),
    ({"entity": {}}, "neither 'triples' nor 'facts'"),
    ({"entity": {"facts": None, "triples": None}}, "neither 'triples' nor 'facts'"),
    ({"entity": {"facts": "hello"}}, "entity.facts is a str"),
    ({"entity": {"triples": {"subject": "user"}}}, "entity.triples is a dict"),
    ({"entity": {"facts": ["ok", None]}}, "entity.facts[1] is null"),
    ({"entity": {"facts": ["ok", ["nested"]]}}, "entity.facts[1] is a list"),
    ({"entity": {"facts": [""]}}, "entity.facts[0] is empty"),
    ({"entity": {"triples": ["user owns a bike"]}}, "entity.triples[0] is a str"),
    ({"entity": {"triples": [{"predicate": "owns"}]}}, "entity.triples[0].subject is missing"),
    (with_triple(subject={"name": None, "type": "person"}), "subject.name is null"),
    (with_triple(object={"type": "product"}), "object.name is null"),
    (with_triple(object={"name": " ", "type": "product"}), "object.name is empty"),
    (with_triple(subject="user"), "entity.triples[0].subject is a str"),
    (with_triple(subject={"name": "user", "type": ["person"]}), "subject.type is a list"),
    (with_triple(predicate=None), "entity.triples[0].predicate is null"),
    ({"entity": {"facts": []}, "conversation": {"summary": 5}}, "conversation.summary is a int"),
    ({"entity": {"facts": []}, "conversation": "hi"}, "conversation is a str"),
    ({"entity": {"facts": []}, "process": {"attributes": "chatty"}}, "process.attributes"),
    ({"entity": {"facts": []}, "process": {"attributes": [{}]}}, "process.attributes[0]"),
])
def test_a_200_of_the_wrong_shape_is_malformed_never_a_success(body, where):
    error = augment(respond(json=body))
    assert type(error) is TransientError
    assert error.status_code == 200 and "malformed response" in str(error)
    assert where in str(error)


@pytest.mark.parametrize("response", [
    httpx.Response(200, text="<html>gateway hiccup</html>"),
    httpx.Response(200, text=""),
    httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000),
])
def test_a_200_that_is_not_json_is_malformed(response):
    error = augment(lambda request: response)
    assert type(error) is TransientError and "malformed response body (not JSON)" in str(error)


@pytest.mark.parametrize(("body", "expected"), [
    ({"entity": {"facts": []}}, Extraction()),
    ({"entity": {"triples": []}, "conversation": None, "process": None}, Extraction()),
    ({"entity": {"facts": None, "triples": []}, "conversation": {"summary": None}},
     Extraction()),
    ({"entity": {"facts": ["Born in 1990"]}, "conversation": {"summary": ""}},
     Extraction(facts=("Born in 1990",), summary="")),
    (with_triple(object={"name": 42}),  # a number is a name: an age, a year
     Extraction(triples=(Triple(subject_name="user", subject_type="person", predicate="owns",
                                object_name="42", object_type="unknown"),),
                facts=("user owns 42",))),
])
def test_the_documented_shapes_are_accepted(body, expected):
    assert augment(respond(json=body)) == expected


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("timed out"),
                                 httpx.RemoteProtocolError("peer closed connection")])
def test_transport_failures_are_transient(exc):
    def handler(request):
        raise exc

    error = augment(handler)
    assert type(error) is TransientError
    assert error.conversation_id == "conv-1" and error.status_code is None
    assert isinstance(error.__cause__, type(exc))


@pytest.mark.parametrize("exc", [httpx.ConnectError("[Errno -2] Name or service not known"),
                                 httpx.ConnectTimeout("timed out"),
                                 httpx.ProxyError("proxy refused")])
def test_a_service_that_cannot_be_reached_names_the_url(exc):
    def handler(request):
        raise exc

    error = augment(handler, base_url="https://aa.example.test")
    assert type(error) is ServiceUnreachableError
    assert "https://aa.example.test/v1/sdk/augmentation" in str(error)
    assert "MEMORI_API_URL_BASE" in str(error) and str(exc) in str(error)


@pytest.mark.parametrize("base_url", ["api.memorilabs.ai", "ftp://aa.test", "http://",
                                      "http://[::1"])
def test_a_base_url_that_is_not_http_is_refused_before_sending(base_url):
    calls = []
    with pytest.raises(ConfigurationError, match="MEMORI_API_URL_BASE"):
        augment(lambda request: calls.append(request), base_url=base_url)
    assert calls == []


@pytest.mark.parametrize("backend", ["memori", "openai"])
# The key given as the key too, or two lines of a .env swapped (the key then is the URL).
@pytest.mark.parametrize("api_key", [KEY, "https://api.memorilabs.ai"])
def test_a_key_in_the_base_url_setting_is_not_shown(backend, api_key):
    memori = Memori(conn=":memory:", backend=backend, api_key=api_key, base_url=KEY,
                    **({"model": "tiny"} if backend == "openai" else {}))
    seed = SeedData.for_conversations(entity_id="u1", conversations=[
        {"id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ConfigurationError, match="does not start with http:// or https://; "
                                                 "set an address such as") as caught:
        asyncio.run(memori.seed(seed, progress=False))
    for shown in (str(caught.value), repr(memori)):
        assert KEY[:8] not in shown and KEY[-8:] not in shown


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


def key_parts(text: str, key: str = KEY, size: int = 8) -> set[str]:
    """Every part of ``key`` of ``size`` characters that occurs in ``text``."""
    return {key[i:i + size] for i in range(len(key) - size + 1)} & {
        text[i:i + size] for i in range(len(text) - size + 1)}


@pytest.mark.parametrize(("text", "expected"), [
    (f"Bearer {KEY}", "Bearer ***"),
    (f"key={KEY}&user=bob", "key=***&user=bob"),
    (f"token{KEY}.", "***."),  # glued to other text: the whole token goes
    (f"cut at the end: {KEY[:8]}", "cut at the end: ***"),
    (f"{KEY[-8:]} is the end of it", "*** is the end of it"),
    (f"middle {KEY[5:15]} part", "middle *** part"),
    (f"short {KEY[:7]} part", f"short {KEY[:7]} part"),  # under 8 characters: not a secret
    ("nothing to hide here, sk-test", "nothing to hide here, sk-test"),
])
def test_the_redactor_hides_the_key_and_any_part_of_8_or_more(text, expected):
    assert KeyRedactor(KEY)(text) == expected


def test_the_redactor_copes_with_regex_characters_in_the_key():
    key = "a.b+c]d^e-f\\g[h(1)*?$|"
    redact = KeyRedactor(key)
    assert redact(f"x {key} y {key[3:12]} z") == "x *** y *** z"
    assert redact("a.b+c and more") == "a.b+c and more"


def test_a_short_key_hides_only_itself_and_never_garbles_words():
    redact = KeyRedactor("abc")
    assert redact("abc abcdef cabbage xabc, abc.") == "*** abcdef cabbage xabc, ***."
    assert KeyRedactor("")("abc") == KeyRedactor(None)("abc") == "abc"


@pytest.mark.parametrize("pad", range(280, 305))
def test_a_key_echoed_at_the_cut_never_shows_even_in_part(pad):
    echo = lambda request: httpx.Response(  # noqa: E731
        422, json={"detail": "p" * pad + " " + request.headers["authorization"] + " end"})
    error = augment(echo)
    assert type(error) is PayloadRejectedError
    assert not key_parts(str(error)) and not key_parts(repr(error))
    assert str(error).startswith("HTTP 422: ppp")


def test_a_key_echoed_in_a_200_answer_is_hidden_and_the_rest_kept():
    def handler(request):
        auth = request.headers["authorization"]
        return httpx.Response(200, json={
            "entity": {"triples": [{"subject": {"name": f"user {KEY[:12]}", "type": auth},
                                    "predicate": f"sent_{KEY}",
                                    "object": {"name": "header " + auth, "type": "text"}}],
                       "facts": [f"The header was {auth}", "The user likes tea"]},
            "conversation": {"summary": f"User pasted {KEY[-10:]} by mistake"},
            "process": {"attributes": [auth]}})

    extraction = augment(handler)
    assert not key_parts(repr(extraction))
    assert extraction.facts == ("The header was Bearer ***", "The user likes tea")
    assert extraction.summary == "User pasted *** by mistake"
    assert extraction.triples[0].subject_name == "user ***"
    assert extraction.triples[0].predicate == "sent_***"
