"""KeepAliveTransport against a real loopback server: reuse, recovery, errors, closing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from helpers import API_KEY, conversation
from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.backends.base import AugmentationRequest
from memori_nb.backends.memori import KeyRedactor
from memori_nb.engine import seed_all
from memori_nb.http import KeepAliveTransport
from memori_nb.models import Message
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer, Fault, fail_first, refusing_url

BODY = {"conversation": {"messages": [{"role": "user", "content": "I live in Porto."}]}}
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def post_all(client: httpx.AsyncClient, url: str, count: int) -> list[httpx.Response]:
    return await asyncio.gather(*(client.post(url, json=BODY, headers=HEADERS)
                                  for _ in range(count)))


def test_requests_one_after_another_share_one_connection(server):
    async def main():
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            answers = [await client.post(server.endpoint, json=BODY, headers=HEADERS)
                       for _ in range(5)]
            open_connections = transport.connection_count
        return answers, open_connections, transport.connection_count

    answers, open_connections, after_close = asyncio.run(main())
    assert [a.status_code for a in answers] == [200] * 5
    assert answers[0].json()["entity"]["triples"][0]["object"]["name"] == "Porto"
    assert server.connection_count == 1 and open_connections == 1
    assert after_close == 0  # closing the client closed the transport's connections


def test_concurrent_requests_open_one_connection_each_and_reuse_them():
    with AugmentationServer(api_key=API_KEY, latency=0.2) as server:
        async def main():
            async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
                first = await post_all(client, server.endpoint, 30)
                second = await post_all(client, server.endpoint, 30)
            return first + second

        answers = asyncio.run(main())
        assert [a.status_code for a in answers] == [200] * 60
        assert server.max_in_flight == 30
        assert server.connection_count == 30  # the second round reused the first's


def test_a_connection_the_server_dropped_fails_its_request_only():
    with AugmentationServer(api_key=API_KEY, faults=fail_first(1, Fault.drop())) as server:
        async def main():
            async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
                with pytest.raises(httpx.RemoteProtocolError):  # httpx's type, not httpcore's
                    await client.post(server.endpoint, json=BODY, headers=HEADERS)
                return await client.post(server.endpoint, json=BODY, headers=HEADERS)

        assert asyncio.run(main()).status_code == 200
        assert server.connection_count == 2


def test_a_kept_connection_the_server_closed_is_replaced():
    first_server = AugmentationServer(api_key=API_KEY).start()
    port = int(first_server.url.rsplit(":", 1)[1])

    async def main():
        async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
            first = await client.post(first_server.endpoint, json=BODY, headers=HEADERS)
            first_server.stop()  # closes the kept-alive connection from the server's side
            with AugmentationServer(api_key=API_KEY, port=port) as again:
                # Same origin: the closed connection is noticed and replaced, not reused.
                rest = [await client.post(again.endpoint, json=BODY, headers=HEADERS)
                        for _ in range(2)]
                return [first, *rest], again.connection_count

    answers, connections = asyncio.run(main())
    assert [a.status_code for a in answers] == [200] * 3
    assert connections == 1  # the new server's one connection served both requests


def test_a_request_cut_off_by_a_timeout_does_not_spoil_the_next():
    with AugmentationServer(api_key=API_KEY,
                            faults=fail_first(1, Fault.delay(5.0))) as server:
        async def main():
            transport = KeepAliveTransport()
            async with httpx.AsyncClient(transport=transport) as client:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await client.post(server.endpoint, json=BODY, headers=HEADERS)
                left_open = transport.connection_count
                answer = await client.post(server.endpoint, json=BODY, headers=HEADERS)
            return left_open, answer

        left_open, answer = asyncio.run(main())
        assert left_open == 0  # the cancelled request's connection was closed, not kept
        assert answer.status_code == 200


def test_connection_errors_are_httpx_errors():
    async def main(url):
        async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
            await client.post(url + "/v1/sdk/augmentation", json=BODY)

    with refusing_url() as url, pytest.raises(httpx.ConnectError):
        asyncio.run(main(url))


def test_the_backends_own_client_keeps_one_connection_per_slot_of_the_window(tmp_path):
    conversations = [conversation(f"c{i}", f"I live in Porto, note {i}.", "Nice!")
                     for i in range(40)]
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        async def main():
            backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
            store = DuckDBStore(tmp_path / "seed.duckdb")
            try:
                return await seed_all(
                    [SeedData.for_conversations(entity_id="u", conversations=conversations)],
                    backend=backend, store=store, config=SeedConfig(batch_size=8))
            finally:
                await backend.aclose()
                store.close()

        result = asyncio.run(main())
        assert result.successful == 40
        assert server.request_count == 40
        assert server.connection_count <= 8


def test_every_character_reaches_the_service_as_written(server):
    texts = ["Je m'appelle Zoë, j'habite à Québec 🍁", "東京に住んでいます", "“quoted” — dash",
             'a "quote", a back\\slash, a tab\t and a newline\n']
    request = AugmentationRequest(
        entity_id="u", conversation_id="c",
        messages=tuple(Message(role="user", content=text) for text in texts))

    async def main():
        backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
        try:
            return await backend.augment(request)
        finally:
            await backend.aclose()

    asyncio.run(main())
    (received,) = server.requests
    assert received.headers["content-type"] == "application/json"
    assert [m["content"] for m in received.body["conversation"]["messages"]] == texts


def test_connections_left_idle_past_keepalive_expiry_are_closed():
    with AugmentationServer(api_key=API_KEY, latency=0.1) as server:
        async def main():
            transport = KeepAliveTransport(keepalive_expiry=0.2)
            async with httpx.AsyncClient(transport=transport) as client:
                await post_all(client, server.endpoint, 3)  # a burst: three connections
                after_burst = transport.connection_count
                for _ in range(6):  # then one at a time, for longer than the expiry
                    await client.post(server.endpoint, json=BODY, headers=HEADERS)
                    await asyncio.sleep(0.05)
                return after_burst, transport.connection_count

        after_burst, after_quiet = asyncio.run(main())
        assert after_burst == 3
        assert after_quiet == 1  # the burst's surplus was closed, one connection serves on


@pytest.mark.parametrize(("text", "expected"), [
    (API_KEY[:8], "***"), (API_KEY[4:12], "***"), (f"x{API_KEY[10:18]}yz", "***"),
    (f"name: {API_KEY[-8:]}!", "name: ***!")])
def test_short_answer_strings_holding_part_of_the_key_are_hidden(text, expected):
    # Triples' names and predicates are short: the redactor looks them up by window.
    assert KeyRedactor(API_KEY)(text) == expected


def test_short_answer_strings_without_the_key_stay_as_they_are():
    redact = KeyRedactor(API_KEY)
    assert [redact(t) for t in ["", "user", "lives_in", "Porto", API_KEY[:7]]] == [
        "", "user", "lives_in", "Porto", API_KEY[:7]]


def test_the_default_client_goes_through_a_proxy_from_the_environment(monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from memori_nb.backends.memori import default_client

    seen = []

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - stdlib naming
            seen.append(self.path)  # a proxy is asked for the whole URL
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")

    async def go():
        async with default_client() as client:
            return await client.get("http://memori.invalid/v1/x")

    try:
        assert asyncio.run(go()).status_code == 204
    finally:
        proxy.shutdown()
    assert seen == ["http://memori.invalid/v1/x"]
