"""Tests for memori_nb.testing: the loopback AA server speaks the protocol and injects faults."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from memori_nb.backends.base import AugmentationRequest
from memori_nb.models import Message
from memori_nb.protocols import chat
from memori_nb.testing import (
    AugmentationServer,
    Fault,
    fail_first,
    fail_when_content_contains,
    lognormal_latency,
    refusing_url,
    sequence,
)


def fake_extract(messages, summary):
    """One triple per user message: "user said <content>"."""
    triples = [{"subject": {"name": "user", "type": "person"}, "predicate": "said",
                "object": {"name": m["content"], "type": "text"}}
               for m in messages if m["role"] == "user"]
    return {"entity": {"triples": triples,
                       "facts": [f"user said {t['object']['name']}" for t in triples]},
            "conversation": {"summary": f"{len(messages)} messages after {summary!r}"},
            "process": {"attributes": ["chat"]}}


def payload(*contents: str, summary: str | None = None) -> dict:
    return {"conversation": {"messages": [{"role": "user", "content": c} for c in contents],
                             "summary": summary},
            "meta": {"attribution": {"entity": {"id": "ab" * 32}, "process": {"id": None}},
                     "sdk": {"lang": "python", "version": "0"}}}


@pytest.fixture
def client():
    with httpx.Client(timeout=5.0) as http:
        yield http


def wait_until(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_answers_with_protocol_shape_and_records_request(client):
    with AugmentationServer(extract=fake_extract) as server:
        assert server.url.startswith("http://127.0.0.1:")
        response = client.post(f"{server.url}/v1/sdk/augmentation",
                               json=payload("I bought a Tesla", summary="earlier"),
                               headers={"X-Trace": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["entity"]["triples"] == [{"subject": {"name": "user", "type": "person"},
                                          "predicate": "said",
                                          "object": {"name": "I bought a Tesla", "type": "text"}}]
    assert data["entity"]["facts"] == ["user said I bought a Tesla"]
    assert data["conversation"]["summary"] == "1 messages after 'earlier'"
    assert data["process"]["attributes"] == ["chat"]
    [record] = server.requests
    assert (record.number, record.method, record.path, record.fault) == (
        1, "POST", "/v1/sdk/augmentation", None)
    assert record.body == payload("I bought a Tesla", summary="earlier")
    assert record.headers["x-trace"] == "1"
    assert server.request_count == 1


def test_default_extractor_uses_local_backend(client):
    local = pytest.importorskip("memori_nb.backends.local")
    if not hasattr(local, "extract"):
        pytest.skip("memori_nb.backends.local has no extract() yet")
    with AugmentationServer() as server:
        response = client.post(server.endpoint, json=payload(
            "My name is Alice and I live in Paris.", "I work as a nurse."))
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"entity", "conversation", "process"}
    assert any("Paris" in fact for fact in data["entity"]["facts"])
    assert isinstance(data["conversation"]["summary"], str)
    assert isinstance(data["process"]["attributes"], list)
    for triple in data["entity"]["triples"]:
        assert set(triple) == {"subject", "predicate", "object"}
        assert set(triple["subject"]) == set(triple["object"]) == {"name", "type"}


def test_api_key_is_required_when_set(client):
    with AugmentationServer(api_key="secret", extract=fake_extract) as server:
        missing = client.post(server.endpoint, json=payload("hi"))
        wrong = client.post(server.endpoint, json=payload("hi"),
                            headers={"Authorization": "Bearer nope"})
        right = client.post(server.endpoint, json=payload("hi"),
                            headers={"Authorization": "Bearer secret"})
    assert missing.status_code == wrong.status_code == 401
    assert "detail" in wrong.json()
    assert right.status_code == 200


def test_unknown_paths_and_methods_get_404(client):
    with AugmentationServer(extract=fake_extract) as server:
        assert client.post(f"{server.url}/v1/other", json=payload("hi")).status_code == 404
        assert client.get(server.endpoint).status_code == 404


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"conversation": {}}',
                                     b'{"conversation": {"messages": [{"role": "user"}]}}'])
def test_bad_bodies_get_422_with_detail(client, content):
    with AugmentationServer(extract=fake_extract) as server:
        response = client.post(server.endpoint, content=content,
                               headers={"Content-Type": "application/json"})
        # The connection stays usable after an error answer.
        assert client.post(server.endpoint, json=payload("ok")).status_code == 200
    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize("fault, status", [
    (Fault.status(503), 503), (Fault.status(500), 500), (Fault.status(502), 502),
    (Fault.reject("too long"), 422), (Fault.quota_exceeded(), 429),
])
def test_status_faults(client, fault, status):
    with AugmentationServer(extract=fake_extract, faults=lambda n, body: fault) as server:
        response = client.post(server.endpoint, json=payload("hi"))
    assert response.status_code == status
    assert response.json()["detail"]
    assert server.requests[0].fault == fault


def test_quota_exceeded_says_quota_and_has_no_retry_after(client):
    with AugmentationServer(extract=fake_extract,
                            faults=lambda n, body: Fault.quota_exceeded()) as server:
        response = client.post(server.endpoint, json=payload("hi"))
    assert response.status_code == 429
    assert "quota" in response.text.lower()
    assert "retry-after" not in response.headers


def test_rate_limited_sends_fractional_retry_after(client):
    with AugmentationServer(extract=fake_extract,
                            faults=fail_first(2, Fault.rate_limited(0.05))) as server:
        first = client.post(server.endpoint, json=payload("hi"))
        plain = Fault.rate_limited(None)
        server.faults = lambda n, body: plain
        second = client.post(server.endpoint, json=payload("hi"))
    assert first.status_code == 429
    assert first.headers["retry-after"] == "0.05"
    assert "quota" not in first.text.lower()
    assert second.status_code == 429
    assert "retry-after" not in second.headers


def test_drop_closes_connection_without_response(client):
    with AugmentationServer(extract=fake_extract, faults=fail_first(1, Fault.drop())) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(server.endpoint, json=payload("hi"))
        assert client.post(server.endpoint, json=payload("hi")).status_code == 200


def test_malformed_answers_200_with_invalid_json(client):
    with AugmentationServer(extract=fake_extract, faults=fail_first(1, Fault.malformed())) as server:
        response = client.post(server.endpoint, json=payload("hi"))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_delay_adds_latency_then_answers(client):
    with AugmentationServer(extract=fake_extract, faults=fail_first(1, Fault.delay(0.1))) as server:
        started = time.monotonic()
        response = client.post(server.endpoint, json=payload("hi"))
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.1 <= elapsed < 1.0


def test_fail_first_counts_requests_in_arrival_order(client):
    with AugmentationServer(extract=fake_extract, faults=fail_first(2, Fault.status(503))) as server:
        statuses = [client.post(server.endpoint, json=payload("hi")).status_code
                    for _ in range(4)]
        assert [r.number for r in server.requests] == [1, 2, 3, 4]
        assert [r.fault is not None for r in server.requests] == [True, True, False, False]
        server.reset()
        assert server.request_count == 0
        assert client.post(server.endpoint, json=payload("hi")).status_code == 503
    assert statuses == [503, 503, 200, 200]


def test_content_rule_and_sequence(client):
    rule = sequence(None, fail_when_content_contains("poison", Fault.reject("poisoned")),
                    fail_first(1, Fault.status(500)))
    with AugmentationServer(extract=fake_extract, faults=rule) as server:
        first = client.post(server.endpoint, json=payload("a poison pill"))
        second = client.post(server.endpoint, json=payload("fine"))
        third = client.post(server.endpoint, json=payload("fine"))
    assert (first.status_code, first.json()) == (422, {"detail": "poisoned"})
    assert second.status_code == 200  # number 2: fail_first(1) no longer applies
    assert third.status_code == 200


def test_max_in_flight_counts_concurrent_requests():
    with AugmentationServer(extract=fake_extract, latency=0.2) as server:
        def post(_):
            with httpx.Client(timeout=5.0) as http:
                return http.post(server.endpoint, json=payload("hi")).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(post, range(4)))
    assert statuses == [200] * 4
    assert server.max_in_flight == 4
    assert server.in_flight == 0
    assert server.latencies == [0.2] * 4


def test_sixty_concurrent_keep_alive_connections():
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    # A latency long enough for 60 client threads to start on a busy 2-core machine: the
    # server must hold all 60 at once, not serve them one after another.
    with AugmentationServer(extract=fake_extract, latency=1.5) as server, \
            httpx.Client(timeout=10.0, limits=limits) as http:
        def post(i):
            return http.post(server.endpoint, json=payload(f"message {i}")).status_code

        with ThreadPoolExecutor(60) as pool:
            statuses = list(pool.map(post, range(60)))
        assert http.post(server.endpoint, json=payload("again")).status_code == 200
    assert statuses == [200] * 60
    assert server.max_in_flight == 60
    assert server.connection_count == 60  # the 61st request reused a kept-alive connection


def test_lognormal_latency_is_seeded_and_recorded(client):
    a, b = lognormal_latency(0.001, 0.5, seed=7), lognormal_latency(0.001, 0.5, seed=7)
    samples = [a() for _ in range(5)]
    assert samples == [b() for _ in range(5)]
    assert all(s > 0 for s in samples)
    with AugmentationServer(extract=fake_extract,
                            latency=lognormal_latency(0.001, 0.5, seed=7)) as server:
        for _ in range(3):
            client.post(server.endpoint, json=payload("hi"))
    assert server.latencies == samples[:3]


def test_stop_returns_quickly_while_a_request_sleeps():
    server = AugmentationServer(extract=fake_extract, latency=30.0).start()
    errors = []

    def post():
        try:
            with httpx.Client(timeout=10.0) as http:
                http.post(server.endpoint, json=payload("hi"))
        except httpx.HTTPError as exc:
            errors.append(exc)

    worker = threading.Thread(target=post)
    worker.start()
    wait_until(lambda: server.in_flight == 1)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    worker.join(2.0)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], httpx.TransportError)
    server.stop()  # a second stop is harmless


def test_idle_keep_alive_connection_does_not_block_stop(client):
    server = AugmentationServer(extract=fake_extract).start()
    assert client.post(server.endpoint, json=payload("hi")).status_code == 200
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(RuntimeError):
        server.url


def test_extract_errors_become_500(client):
    def broken(messages, summary):
        raise KeyError("boom")

    with AugmentationServer(extract=broken) as server:
        response = client.post(server.endpoint, json=payload("hi"))
    assert response.status_code == 500
    assert "boom" in response.json()["detail"]


def test_module_imports_without_local_backend():
    module = importlib.import_module("memori_nb.testing")
    assert module.AugmentationServer is AugmentationServer


def test_echo_puts_request_headers_into_an_error_body(client):
    fault = Fault.echo(422, {"detail": ["bad header {authorization}", "{x-missing} stays"]})
    with AugmentationServer(api_key="secret-key", extract=fake_extract,
                            faults=lambda n, body: fault) as server:
        response = client.post(server.endpoint, json=payload("hi"),
                               headers={"Authorization": "Bearer secret-key"})
    assert response.status_code == 422
    assert response.json() == {"detail": ["bad header Bearer secret-key", "{x-missing} stays"]}


def test_echo_as_plain_text_and_inside_a_200_answer(client):
    text = Fault.echo(500, "upstream said: {authorization}")
    answer = Fault.echo(200, {"entity": {"facts": ["key {authorization}"], "triples": []}})
    with AugmentationServer(extract=fake_extract,
                            faults=sequence(fail_first(1, text), fail_first(2, answer))) as server:
        first = client.post(server.endpoint, json=payload("hi"), headers={"Authorization": "k1"})
        second = client.post(server.endpoint, json=payload("hi"), headers={"Authorization": "k2"})
    assert (first.status_code, first.text) == (500, "upstream said: k1")
    assert first.headers["content-type"] == "text/plain"
    assert second.json()["entity"]["facts"] == ["key k2"]


def test_answer_sends_any_shape_with_200(client):
    with AugmentationServer(extract=fake_extract,
                            faults=fail_first(1, Fault.answer({"entity": {}}))) as server:
        response = client.post(server.endpoint, json=payload("hi"))
    assert (response.status_code, response.json()) == (200, {"entity": {}})


def test_redirect_sends_a_location(client):
    with AugmentationServer(extract=fake_extract,
                            faults=fail_first(1, Fault.redirect("https://x.test/v2"))) as server:
        response = client.post(server.endpoint, json=payload("hi"))
    assert response.status_code == 307 and response.headers["location"] == "https://x.test/v2"


def test_endless_body_goes_on_until_the_client_hangs_up():
    with AugmentationServer(extract=fake_extract, faults=fail_first(1, Fault.endless())) as server:
        with httpx.Client(timeout=5.0) as http:
            with http.stream("POST", server.endpoint, json=payload("hi")) as response:
                assert response.status_code == 200 and "content-length" not in response.headers
                read = 0
                for chunk in response.iter_bytes():
                    read += len(chunk)
                    if read > 8 * 1024 * 1024:
                        break
            assert http.post(server.endpoint, json=payload("hi")).status_code == 200
        wait_until(lambda: server.in_flight == 0)
    assert read > 8 * 1024 * 1024


def test_refusing_url_refuses_connections_at_once():
    with refusing_url() as url:
        assert url.startswith("http://127.0.0.1:")
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            httpx.post(url + "/v1/sdk/augmentation", json=payload("hi"))
        assert time.monotonic() - started < 1.0


# --- chat completions and the in-process transport --------------------------------------

def chat_body(*contents: str, summary: str | None = None, mode: str = "json_schema") -> dict:
    request = AugmentationRequest(entity_id="e", conversation_id="c", summary=summary,
                                  messages=tuple(Message(role="user", content=c)
                                                 for c in contents))
    return chat.build_request(request, model="tiny", mode=mode)


def chat_facts(response: httpx.Response) -> tuple[str, ...]:
    return chat.parse_answer(response.content).extraction.facts


def test_chat_completions_answer_the_same_extraction_as_aa_on_both_paths(client):
    with AugmentationServer(extract=fake_extract) as server:
        aa = client.post(server.endpoint, json=payload("I like tea", summary="s0")).json()
        for path in ("/v1/chat/completions", "/chat/completions"):
            response = client.post(server.url + path, json=chat_body("I like tea",
                                                                     summary="s0"))
            assert response.status_code == 200
            assert chat_facts(response) == tuple(aa["entity"]["facts"])
            answer = response.json()
            content = json.loads(answer["choices"][0]["message"]["content"])
            assert content["summary"] == "1 messages after 's0'"
            assert answer["usage"]["prompt_tokens"] > 0


def test_chat_requests_that_are_not_ours_get_400_in_openai_error_shape(client):
    with AugmentationServer(extract=fake_extract) as server:
        response = client.post(server.url + "/v1/chat/completions",
                               json={"model": "m", "messages": [{"role": "user",
                                                                 "content": "hello"}]})
    assert response.status_code == 400
    assert "conversation document" in response.json()["error"]["message"]


def test_a_refused_mode_names_response_format(client):
    with AugmentationServer(extract=fake_extract, refuse_modes={"json_schema"},
                            refuse_status=500) as server:
        refused = client.post(server.url + "/v1/chat/completions", json=chat_body("hi"))
        taken = client.post(server.url + "/v1/chat/completions",
                            json=chat_body("hi", mode="json_object_schema"))
    assert refused.status_code == 500 and "response_format" in refused.text
    assert taken.status_code == 200


def test_the_mock_transport_follows_the_same_rules_without_a_socket():
    server = AugmentationServer(extract=fake_extract, api_key="k",
                                faults=fail_first(1, Fault.status(503)))

    async def go():
        async with httpx.AsyncClient(transport=server.mock_transport()) as http:
            headers = {"Authorization": "Bearer k"}
            url = "http://fake.test/v1/chat/completions"
            first = await http.post(url, json=chat_body("I like tea"), headers=headers)
            second = await http.post(url, json=chat_body("I like tea"), headers=headers)
            anonymous = await http.post(url, json=chat_body("I like tea"))
            with pytest.raises(httpx.RemoteProtocolError):
                server.faults = fail_first(4, Fault.drop())
                await http.post(url, json=chat_body("x"), headers=headers)
            return first, second, anonymous
    first, second, anonymous = asyncio.run(go())
    assert (first.status_code, second.status_code, anonymous.status_code) == (503, 200, 401)
    assert chat_facts(second) == ("user said I like tea",)
    assert server.request_count == 4 and server.requests[1].body["model"] == "tiny"


def test_the_mock_transport_refuses_beyond_its_concurrency_limit():
    server = AugmentationServer(extract=fake_extract, concurrency_limit=2, latency=0.05)

    async def go():
        async with httpx.AsyncClient(transport=server.mock_transport()) as http:
            return await asyncio.gather(*(http.post("http://f.test/v1/sdk/augmentation",
                                                    json=payload("hi")) for _ in range(5)))
    statuses = sorted(r.status_code for r in asyncio.run(go()))
    assert statuses == [200, 200, 429, 429, 429] and server.refused_count == 3
