"""The openai backend against the loopback server (real sockets) and its in-process
MockTransport: structured-output step-down, answers dressed up by models, errors and limits,
the key kept out of sight, the CLI end to end, summaries across chunks."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime

import duckdb
import httpx
import pytest

from helpers import API_KEY, conversation, seed_with_fake_time
from memori_nb import Memori, SeedConfig, SeedData, chunking_stats
from memori_nb.backends import OpenAIBackend, resolve_backend
from memori_nb.backends.base import AugmentationRequest
from memori_nb.cli import main
from memori_nb.engine import seed_all
from memori_nb.errors import (ConfigurationError, EndpointError, RateLimitedError,
                              RequestFailedError, TransientError)
from memori_nb.models import Message, Usage
from memori_nb.pricing import estimate_tokens
from memori_nb.protocols import chat
from memori_nb.ratelimit import RateLimiter
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, Fault, fail_first

REQUEST = AugmentationRequest(entity_id="user-1", conversation_id="c1", messages=(
    Message(role="user", content="I live in Lisbon and I have a sister named Ana."),
    Message(role="assistant", content="Lovely city!")))


def modes(server):
    return [chat.request_mode(r.body) for r in server.requests]


def augment(server, request=REQUEST, **options):
    async def go():
        backend = OpenAIBackend(**{"model": "tiny", "base_url": server.chat_base_url,
                                   "api_key": API_KEY, **options})
        try:
            return await backend.augment(request), backend
        finally:
            await backend.aclose()
    return asyncio.run(go())


def seed(server, conversations, *, fake_time, config=None, backend=None, store=None,
         **options):
    store = store or DuckDBStore(":memory:")
    backend = backend or OpenAIBackend(**{"model": "tiny", "base_url": server.chat_base_url,
                                          "api_key": API_KEY, **options})
    return seed_with_fake_time(backend, conversations, store, fake_time=fake_time,
                               config=config), store


def many(n):
    return [conversation(f"c{i}", "I live in Porto and I love hiking.", "Nice!")
            for i in range(n)]


def stored_text(store) -> str:
    tables = store.sql("select table_name from information_schema.tables").table_name
    return "\n".join(store.sql(f'select * from "{t}"').astype(str).to_csv() for t in tables)


def key_parts(text: str, key: str = API_KEY, size: int = 8) -> set[str]:
    return {key[i:i + size] for i in range(len(key) - size + 1)} & {
        text[i:i + size] for i in range(len(text) - size + 1)}


# --- structured output ------------------------------------------------------------------

def test_the_backends_own_timeout_bounds_an_answer_on_its_own_client():
    """``timeout=`` reaches the default client's short path: a slow server is a timeout
    after it, not after the server's answer."""
    import time

    from memori_nb.errors import TransientError

    with AugmentationServer(latency=3.0) as server:
        async def go():
            backend = OpenAIBackend(model="tiny", base_url=f"{server.url}/v1", timeout=0.3)
            try:
                started = time.monotonic()
                with pytest.raises(TransientError, match="timed out"):
                    await backend.augment(REQUEST)
                return time.monotonic() - started
            finally:
                await backend.aclose()

        assert asyncio.run(go()) < 2.0


def test_a_strict_schema_is_asked_first_and_kept_when_it_works(fake_time):
    with AugmentationServer(api_key=API_KEY) as server:
        result, _ = seed(server, many(3), fake_time=fake_time, config=SeedConfig(batch_size=1))
    assert result.successful == 3
    assert modes(server) == ["json_schema"] * 3


@pytest.mark.parametrize("status", [400, 500])
def test_a_refused_schema_steps_down_and_later_requests_go_straight_there(fake_time, status):
    with AugmentationServer(api_key=API_KEY, refuse_modes={"json_schema"},
                            refuse_status=status) as server:
        result, _ = seed(server, many(3), fake_time=fake_time, config=SeedConfig(batch_size=1))
    assert result.successful == 3 and result.failed == 0
    assert modes(server) == ["json_schema", "json_object_schema", "json_object_schema",
                             "json_object_schema"]
    assert fake_time.sleeps == []  # a step-down is not a failure: no retry wait


def test_llama_cpp_python_style_refusals_step_down_to_plain_json_object():
    # Its server answers 500 to both schema forms: the schema then goes in the prompt.
    server = AugmentationServer(refuse_modes={"json_schema", "json_object_schema"},
                                refuse_status=500)
    backend = OpenAIBackend(model="tiny", base_url="http://fake.test/v1",
                            client=httpx.AsyncClient(transport=server.mock_transport()))

    async def go():
        return [await backend.augment(REQUEST) for _ in range(2)]
    first, second = asyncio.run(go())
    assert first.facts and second.facts == first.facts
    assert modes(server) == ["json_schema", "json_object_schema", "json_object",
                             "json_object"]
    assert backend.modes == {"http://fake.test/v1": "json_object"}
    assert "JSON schema" in server.requests[-1].body["messages"][0]["content"]


def test_a_400_that_is_not_about_the_format_is_an_error_not_a_step_down():
    server = AugmentationServer(faults=fail_first(1, Fault.status(
        400, {"error": {"message": "messages too long"}})))
    backend = OpenAIBackend(model="tiny", base_url="http://fake.test/v1",
                            client=httpx.AsyncClient(transport=server.mock_transport()))
    with pytest.raises(RequestFailedError, match="messages too long"):
        asyncio.run(backend.augment(REQUEST))
    assert modes(server) == ["json_schema"] and backend.modes == {}


# --- answers as models write them -------------------------------------------------------

@pytest.mark.parametrize("dress", [{"fences": True}, {"think": True},
                                   {"fences": True, "think": True}])
def test_fences_and_think_blocks_do_not_hide_the_facts(dress):
    with AugmentationServer(**dress) as server:
        extraction, _ = augment(server)
    assert "user lives_in Lisbon" in extraction.facts


def test_a_bad_triple_among_good_ones_is_dropped_with_a_warning(fake_time):
    with AugmentationServer() as server:
        plain, _ = augment(server)
    with AugmentationServer(bad_triple=True) as server:
        extraction, _ = augment(server)
        result, store = seed(server, [conversation("c1", *(m.content for m in REQUEST.messages))],
                             fake_time=fake_time)
    assert extraction.triples == plain.triples and len(plain.triples) >= 2
    assert extraction.warnings == ("triple 1 dropped: subject.name is empty",)
    # The conversation succeeds, and the warning stays with its result.
    assert result.successful == 1
    assert store.warnings(result.run_id).warning.tolist() == [
        "triple 1 dropped: subject.name is empty"]


def test_an_answer_cut_at_max_tokens_is_retried_then_failed_clearly(fake_time):
    with AugmentationServer(faults=lambda n, body: Fault.truncated()) as server:
        result, _ = seed(server, many(1), fake_time=fake_time,
                         config=SeedConfig(max_retries=2))
    assert result.failed == 1 and server.request_count == 3
    error = result.results[0].error
    assert "finish_reason 'length'" in error and "max_tokens" in error
    # The three cut answers were generated, so billed: their tokens are in the totals.
    with AugmentationServer() as server:
        clean, _ = seed(server, many(1), fake_time=fake_time)
    assert result.results[0].prompt_tokens == 3 * clean.results[0].prompt_tokens > 0
    assert result.prompt_tokens == result.results[0].prompt_tokens
    assert result.results[0].completion_tokens > 0


def test_a_cut_answer_once_is_retried_and_succeeds(fake_time):
    with AugmentationServer(faults=fail_first(1, Fault.truncated())) as server:
        result, _ = seed(server, many(1), fake_time=fake_time)
    assert result.successful == 1 and server.request_count == 2
    with AugmentationServer() as server:
        clean, _ = seed(server, many(1), fake_time=fake_time)
    assert result.results[0].prompt_tokens == 2 * clean.results[0].prompt_tokens


def test_usage_is_taken_from_the_answer():
    with AugmentationServer() as server:
        extraction, _ = augment(server)
    body = server.requests[0].body
    assert extraction.usage == Usage(
        prompt_tokens=estimate_tokens(chat.prompt_characters(body)),
        completion_tokens=extraction.usage.completion_tokens)
    assert extraction.usage.completion_tokens > 0


def test_usage_missing_is_estimated_from_characters_sent_and_received():
    captured = {}

    def extract(messages, summary):
        captured["content"] = {"triples": [], "summary": "nothing", "attributes": []}
        return captured["content"]
    with AugmentationServer(usage=False, extract=extract) as server:
        extraction, _ = augment(server)
    sent = chat.prompt_characters(server.requests[0].body)
    received = len(json.dumps(captured["content"], ensure_ascii=False))
    assert extraction.usage == Usage(prompt_tokens=estimate_tokens(sent),
                                     completion_tokens=estimate_tokens(received))


# --- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}, 90.0),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
])
def test_429_waits_what_each_header_form_says(fake_time, headers, seconds):
    fault = Fault.status(429, {"error": {"message": "Rate limit reached"}}, headers=headers)
    with AugmentationServer(faults=fail_first(1, fault)) as server:
        backend = OpenAIBackend(model="tiny", base_url=server.chat_base_url, api_key=API_KEY)
        # The backend's own limiter reads the same headers: on the same clock, it adds nothing.
        backend.limiter.clock, backend.limiter.sleep = fake_time.clock, fake_time.sleep
        result, _ = seed(server, many(1), fake_time=fake_time, backend=backend)
    assert result.successful == 1 and server.request_count == 2
    assert fake_time.sleeps == [pytest.approx(seconds)]


def test_429_error_carries_retry_after():
    server = AugmentationServer(faults=fail_first(1, Fault.status(
        429, headers={"retry-after-ms": "250"})))
    backend = OpenAIBackend(model="tiny", base_url="http://fake.test/v1",
                            client=httpx.AsyncClient(transport=server.mock_transport()))
    with pytest.raises(RateLimitedError) as caught:
        asyncio.run(backend.augment(REQUEST))
    assert caught.value.retry_after == 0.25 and caught.value.status_code == 429


def test_a_refused_key_stops_the_run_and_never_shows(fake_time):
    wrong = "sk-wrong-" + API_KEY[::-1]
    with AugmentationServer(api_key=API_KEY, faults=None) as server:
        result, store = seed(server, many(6), fake_time=fake_time, api_key=wrong,
                             config=SeedConfig(batch_size=1))
    assert result.stopped_reason and result.successful == 0
    assert server.request_count == 1  # nothing more was sent
    assert not key_parts(stored_text(store) + str(result), wrong)


def test_the_key_is_hidden_in_errors_answers_reprs_and_rows(fake_time):
    echo = Fault.echo(500, {"error": {"message": "upstream said {authorization}"}})

    def extract(messages, summary):  # a model that repeats what it was given
        return {"triples": [], "summary": f"key is {API_KEY}", "attributes": []}
    with AugmentationServer(api_key=API_KEY, extract=extract,
                            faults=fail_first(1, echo)) as server:
        result, store = seed(server, many(2), fake_time=fake_time,
                             config=SeedConfig(max_retries=0, batch_size=1))
        url = server.chat_base_url
    backend = OpenAIBackend(model="tiny", base_url=url, api_key=API_KEY)
    assert API_KEY in server.requests[0].headers["authorization"]  # it was sent...
    assert result.failed == 1 and "upstream said Bearer ***" in result.results[0].error
    assert result.results[1].summary == "key is ***"
    assert not key_parts(stored_text(store) + str(result) + repr(backend))  # ...never shown
    assert repr(backend) == f"OpenAIBackend(model='tiny', base_url={url!r})"


def test_404_names_the_url_and_the_model():
    server = AugmentationServer()
    backend = OpenAIBackend(model="tiny", base_url="http://fake.test/wrong",
                            client=httpx.AsyncClient(transport=server.mock_transport()))
    with pytest.raises(EndpointError) as caught:
        asyncio.run(backend.augment(REQUEST))
    assert "http://fake.test/wrong/chat/completions" in str(caught.value)
    assert "'tiny'" in str(caught.value)


def test_5xx_and_dropped_connections_are_transient():
    for fault in (Fault.status(503), Fault.drop(), Fault.malformed()):
        server = AugmentationServer(faults=fail_first(1, fault))
        backend = OpenAIBackend(model="tiny", base_url="http://fake.test/v1",
                                client=httpx.AsyncClient(transport=server.mock_transport()))
        with pytest.raises(TransientError):
            asyncio.run(backend.augment(REQUEST))


def test_no_key_means_no_authorization_header_and_extra_headers_are_sent(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with AugmentationServer() as server:
        augment(server, api_key=None, headers={"X-Team": "research"})
    headers = server.requests[0].headers
    assert "authorization" not in headers and headers["x-team"] == "research"


def test_settings_from_the_environment_and_a_missing_model(monkeypatch):
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.test/v1/")
    backend = OpenAIBackend()
    assert (backend.model, backend.endpoint) == ("env-model",
                                                 "http://env.test/v1/chat/completions")
    monkeypatch.delenv("OPENAI_MODEL")
    with pytest.raises(ConfigurationError, match="model=.*OPENAI_MODEL"):
        OpenAIBackend()
    with pytest.raises(ConfigurationError, match="both"):
        OpenAIBackend(model="m", prompt_price=1.0)
    assert OpenAIBackend(model="m").pricing is None
    priced = OpenAIBackend(model="m", prompt_price=0.15, completion_price=0.6)
    assert priced.pricing.cost(Usage(prompt_tokens=2_000_000)) == pytest.approx(0.3)


def test_resolve_backend_passes_options_and_refuses_them_elsewhere():
    backend = resolve_backend("openai", model="m", temperature=0.5, max_tokens=100,
                              requests_per_minute=30, prompt_price=1, completion_price=2)
    assert (backend.model, backend.temperature, backend.max_tokens) == ("m", 0.5, 100)
    assert backend.limiter.requests_per_minute == 30 and backend.pricing.prompt_per_million == 1
    with pytest.raises(ConfigurationError, match="'memori' does not take 'model'"):
        resolve_backend("memori", model="m")
    with pytest.raises(ConfigurationError, match="unknown backend option 'colour'"):
        resolve_backend("openai", model="m", colour="red")
    memori = Memori(conn=":memory:", backend="openai", model="m", tokens_per_minute=1000)
    assert memori.backend.limiter.tokens_per_minute == 1000


# --- client-side limits -----------------------------------------------------------------

def test_requests_per_minute_pace_a_concurrent_run(fake_time):
    backend = OpenAIBackend(model="tiny", base_url="http://x", requests_per_minute=2)
    backend.limiter.clock, backend.limiter.sleep = fake_time.clock, fake_time.sleep
    with AugmentationServer() as server:
        backend.base_url = server.chat_base_url
        result, _ = seed(server, many(5), fake_time=fake_time, backend=backend,
                         config=SeedConfig(batch_size=5))
    assert result.successful == 5
    # A full minute's bucket (2) goes at once, then one request every 30 s.
    assert sum(fake_time.sleeps) == pytest.approx(90.0)


def test_tokens_per_minute_estimate_first_then_correct_from_usage(fake_time):
    limiter = RateLimiter(tokens_per_minute=1000, clock=fake_time.clock, sleep=fake_time.sleep)

    async def go():
        counted = await limiter.acquire(600)
        assert fake_time.sleeps == []
        await limiter.acquire(600)            # 400 left: waits for 200 more, 12 s
        assert fake_time.sleeps == [pytest.approx(12.0)]
        limiter.settle(counted, 900)          # the first really used 900: 300 more owed
        await limiter.acquire(300)            # 0 - 300 left: 600 to wait for, 36 s
        assert fake_time.sleeps[-1] == pytest.approx(36.0)
    asyncio.run(go())


def test_waiters_are_served_in_arrival_order(fake_time):
    limiter = RateLimiter(requests_per_minute=1, clock=fake_time.clock, sleep=fake_time.sleep)
    order = []

    async def one(i):
        await limiter.acquire(1)
        order.append((i, fake_time.now))

    async def go():
        await asyncio.gather(*(one(i) for i in range(4)))
    asyncio.run(go())
    assert [i for i, _ in order] == [0, 1, 2, 3]
    assert [t - 1000.0 for _, t in order] == pytest.approx([0.0, 60.0, 120.0, 180.0])


def test_remaining_zero_holds_the_next_request_until_the_reset(fake_time):
    limiter = RateLimiter(requests_per_minute=1000, clock=fake_time.clock,
                          sleep=fake_time.sleep)
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    asyncio.run(limiter.acquire(1))
    assert fake_time.sleeps == [pytest.approx(2.0)]


# --- whole runs -------------------------------------------------------------------------

def test_chunked_conversations_carry_the_summary_across_chunks(fake_time):
    texts = [f"I have a pet number {i}, and I live in City{i}." if i % 2 == 0 else "Ok."
             for i in range(6)]
    with AugmentationServer() as server:
        result, _ = seed(server, [conversation("long", *texts)], fake_time=fake_time,
                         config=SeedConfig(max_messages_per_request=2))
    assert result.successful == 1 and server.request_count == 3
    documents = [json.loads(r.body["messages"][-1]["content"]) for r in server.requests]
    answers = [server.extract(d["conversation"], d["previous_summary"]) for d in documents]
    assert documents[0]["previous_summary"] is None
    for before, after in zip(answers, documents[1:]):
        assert after["previous_summary"] == before["conversation"]["summary"]
    assert result.results[0].summary == answers[-1]["conversation"]["summary"]


def test_cli_backend_openai_end_to_end_into_a_duckdb_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "user-1", "conversations": many(3)}))
    db = tmp_path / "memori.duckdb"
    out, err = io.StringIO(), io.StringIO()
    with AugmentationServer(api_key=API_KEY, refuse_modes={"json_schema"}, fences=True) as server:
        code = main(["seed", str(path), "--db", str(db), "--backend", "openai",
                     "--base-url", server.chat_base_url, "--model", "tiny",
                     "--temperature", "0.2", "--max-tokens", "512", "--header", "X-Team:r&d",
                     "--rpm", "600", "--tpm", "1000000", "--prompt-price", "0.1",
                     "--completion-price", "0.4"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    sent = server.requests[-1]
    assert sent.headers["x-team"] == "r&d" and sent.body["model"] == "tiny"
    assert (sent.body["temperature"], sent.body["max_tokens"]) == (0.2, 512)
    with duckdb.connect(str(db)) as conn:
        facts = {row[0] for row in conn.execute("select fact from facts").fetchall()}
        summaries = conn.execute("select count(*) from conversation_summaries").fetchone()[0]
    assert "user lives_in Porto" in facts and summaries == 3
    assert not key_parts(out.getvalue() + err.getvalue())
    # Tokens and cost, per conversation and for the run, as the server counted them.
    with duckdb.connect(str(db)) as conn:
        per_conversation = conn.execute(
            "select sum(prompt_tokens), sum(completion_tokens), sum(cost) "
            "from conversation_results").fetchone()
        run = conn.execute("select prompt_tokens, completion_tokens, cost from runs").fetchone()
    prompt, completion, _ = per_conversation
    assert prompt > 0 and completion > 0 and run[:2] == (prompt, completion)
    assert run[2] == pytest.approx((prompt * 0.1 + completion * 0.4) / 1e6)
    assert "completion tokens" in out.getvalue() + err.getvalue()


def test_cli_dry_run_estimates_tokens_and_cost_for_the_openai_backend(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "user-1", "conversations": many(3)}))
    out = io.StringIO()
    code = main(["seed", str(path), "--dry-run", "--json", "--backend", "openai",
                 "--base-url", "http://127.0.0.1:9/v1", "--model", "tiny",
                 "--prompt-price", "1", "--completion-price", "2"],
                stdout=out, stderr=io.StringIO())
    plan = json.loads(out.getvalue())
    assert code == 0
    # The prompt (instructions and schema) is sent with each of the 3 requests.
    assert plan["estimated_prompt_tokens"] > 3 * estimate_tokens(
        chat.prompt_overhead_characters())
    assert plan["estimated_cost"] == pytest.approx(
        (plan["estimated_prompt_tokens"] + 2 * plan["estimated_completion_tokens"]) / 1e6)


def test_cli_refuses_openai_flags_with_another_backend(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u", "conversations": many(1)}))
    err = io.StringIO()
    code = main(["seed", str(path), "--db", str(tmp_path / "x.duckdb"), "--backend", "local",
                 "--model", "m"], stdout=io.StringIO(), stderr=err)
    assert code == 2 and "--model is for --backend openai" in err.getvalue()


def test_secrets_in_extra_headers_are_hidden_like_the_key():
    secret = "azure-0123456789abcdef"
    echo = Fault.echo(500, {"error": {"message": "got {api-key} and {x-team}"}})
    server = AugmentationServer(faults=fail_first(1, echo))
    backend = OpenAIBackend(model="tiny", base_url="http://fake.test/v1",
                            headers={"api-key": secret, "X-Team": "research-and-development"},
                            client=httpx.AsyncClient(transport=server.mock_transport()))
    with pytest.raises(TransientError) as caught:
        asyncio.run(backend.augment(REQUEST))
    assert str(caught.value) == "HTTP 500: got *** and research-and-development"
    assert secret not in repr(backend)


def test_without_limits_of_its_own_it_waits_while_the_server_says_nothing_is_left(fake_time):
    content = json.dumps({"triples": [], "summary": "", "attributes": []})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat.completion(content, model="tiny"), headers={
            "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2.5s"})

    async def go():
        backend = OpenAIBackend(model="tiny", base_url="http://llm.test/v1",
                                client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        backend.limiter.clock, backend.limiter.sleep = fake_time.clock, fake_time.sleep
        for _ in range(2):
            await backend.augment(REQUEST)
        await backend.aclose()

    asyncio.run(go())
    assert fake_time.sleeps == [pytest.approx(2.5)]  # before the second request only


def test_waiting_for_a_rate_limit_does_not_count_as_a_slow_answer():
    # The first answer says the tokens are used up for 2 s; each request may take 1 s.
    content = json.dumps({"triples": [], "summary": "", "attributes": []})
    answers = []

    def handler(request: httpx.Request) -> httpx.Response:
        answers.append(request)
        headers = ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"}
                   if len(answers) == 1 else {})
        return httpx.Response(200, json=chat.completion(content, model="tiny"), headers=headers)

    async def go():
        backend = OpenAIBackend(model="tiny", base_url="http://llm.test/v1",
                                client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        try:
            return await seed_all(
                [SeedData.for_conversations(entity_id="u", conversations=many(3))],
                backend=backend, store=DuckDBStore(":memory:"),
                config=SeedConfig(batch_size=1, request_timeout=1.0, max_retries=0))
        finally:
            await backend.aclose()

    result = asyncio.run(go())
    assert result.successful == 3 and len(answers) == 3


def test_a_422_about_something_else_is_an_error_and_changes_no_form():
    async def go(handler):
        backend = OpenAIBackend(model="tiny", base_url="http://llm.test/v1",
                                client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        try:
            with pytest.raises(Exception) as caught:
                await backend.augment(REQUEST)
            return caught.value, backend.modes
        finally:
            await backend.aclose()

    error, modes = asyncio.run(go(lambda request: httpx.Response(
        422, json={"error": {"message": "message too long for this deployment"}})))
    assert type(error).__name__ == "PayloadRejectedError" and modes == {}


def test_a_refused_form_is_remembered_only_once_a_lower_one_worked(fake_time):
    with AugmentationServer(refuse_modes={"json_schema", "json_object_schema",
                                          "json_object"}) as server:
        result, _ = seed(server, many(1), fake_time=fake_time)
    assert result.failed == 1
    assert modes(server) == list(chat.MODES)  # each form tried once, nothing kept


def test_an_exhausted_quota_stops_the_run_at_once(fake_time):
    quota = Fault.status(429, {"error": {"message": "You exceeded your current quota, please "
                                                    "check your plan and billing details.",
                                         "type": "insufficient_quota"}})
    with AugmentationServer(faults=lambda n, body: quota) as server:
        result, _ = seed(server, many(3), fake_time=fake_time,
                         config=SeedConfig(batch_size=1))
    assert server.request_count == 1
    assert "quota" in result.stopped_reason and result.successful == 0


@pytest.mark.parametrize("temperature", [float("nan"), -0.5, "hot", True])
def test_a_bad_temperature_is_refused_before_anything_is_sent(temperature):
    with pytest.raises(ConfigurationError, match="temperature"):
        OpenAIBackend(model="tiny", temperature=temperature)


def test_the_dry_run_refuses_what_the_run_would_refuse(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"entity_id": "u", "conversations": many(1)}))
    for flags in (["--backend", "openai", "--model", "m", "--prompt-price", "1"],
                  ["--backend", "memori", "--model", "m"]):
        err = io.StringIO()
        code = main(["seed", str(path), "--dry-run", *flags], stdout=io.StringIO(), stderr=err)
        assert code == 2 and "error:" in err.getvalue()


def test_estimates_count_what_each_message_adds_around_short_texts():
    # 200 short timestamped messages: the JSON around each is most of what is sent.
    messages = [{"role": "user" if i % 2 else "assistant", "content": "ok thanks",
                 "timestamp": f"2024-01-01T10:{i // 60:02d}:{i % 60:02d}Z"} for i in range(200)]
    data = SeedData.for_conversations(entity_id="u", conversations=[
        {"id": "c1", "messages": messages}])
    backend = OpenAIBackend(model="tiny", prompt_price=1, completion_price=2)
    estimated = chunking_stats(data, backend=backend)["estimated_prompt_tokens"].iloc[0]
    parsed = tuple(Message(role=m["role"], content=m["content"],
                           timestamp=datetime.fromisoformat(m["timestamp"])) for m in messages)
    sent = chat.prompt_characters(chat.build_request(
        AugmentationRequest(entity_id="u", conversation_id="c1", messages=parsed),
        model="tiny"))
    assert 0.9 <= estimated / estimate_tokens(sent) <= 1.2
