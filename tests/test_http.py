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
from memori_nb.http import KeepAliveClient, KeepAliveTransport
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


def test_the_default_client_sends_its_headers_and_frees_each_request_at_once(server):
    """KeepAliveClient's short path: the client's headers, Host and the caller's go out, the
    answer reads as httpx's does, and nothing keeps the request (and its body) alive
    once the call is done: no cycle waits for the garbage collector."""
    import gc
    import weakref

    async def main():
        async with KeepAliveClient() as client:
            with_body = []
            for _ in range(3):
                async with client.stream("POST", server.endpoint, content=b'{"conversation":'
                                         b'{"messages":[{"role":"user","content":"I live in '
                                         b'Porto."}]}}', headers=HEADERS) as response:
                    body = await response.aread()
                    with_body.append(weakref.ref(response.request))
                    status, reason = response.status_code, response.reason_phrase
                del response
            return status, reason, body, with_body

    gc.disable()
    try:
        status, reason, body, requests = asyncio.run(main())
        alive = [r for r in requests if r() is not None]
    finally:
        gc.enable()
    assert (status, reason) == (200, "OK")
    assert b"Porto" in body
    assert alive == []  # freed when the call ended, not at the next collection
    sent = server.requests[-1].headers
    assert sent["host"] == server.url.split("//")[1]
    assert sent["user-agent"].startswith("python-httpx/")
    assert sent["authorization"] == HEADERS["Authorization"]


def test_the_default_client_takes_httpx_s_path_for_what_it_skips(server):
    """Cookies, event hooks, redirects to follow: the call goes through httpx's client."""
    seen = []

    async def hook(request):
        seen.append(request.url.path)

    async def main():
        async with KeepAliveClient() as client:
            client.event_hooks["request"] = [hook]
            async with client.stream("POST", server.endpoint, json=BODY,
                                     headers=HEADERS) as response:
                await response.aread()
                return response.status_code

    assert asyncio.run(main()) == 200
    assert seen == ["/v1/sdk/augmentation"]

    async def closed():
        client = KeepAliveClient()
        await client.aclose()
        async with client.stream("POST", server.endpoint, content=b"{}"):
            pass

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(closed())


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


# --- HTTP/1.1 on the wire: a loopback server that answers with scripted bytes ----------------

async def scripted(answers: list[bytes], client_calls, *, requests: list[bytes] | None = None,
                   server_tls=None, client_tls=None):
    """Serve ``answers`` in order (each to the next request read, on whatever connection it
    comes; one ending in ``<close>`` closes its connection) from a real loopback socket, then
    stay silent; run ``client_calls(url, client)``; return its result and how many
    connections were accepted."""
    answers = list(answers)
    connections = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                if b"transfer-encoding: chunked" in head.lower():
                    while (size := int((await reader.readline()).strip(), 16)):
                        body += await reader.readexactly(size)
                        await reader.readline()
                    await reader.readline()
                if requests is not None:
                    requests.append(head + body)
                answer = answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if answer.endswith(b"<close>"):
                    return
            await reader.read()  # out of answers: silent until the client hangs up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = listener.sockets[0].getsockname()[1]
    url = f"{'https' if server_tls else 'http'}://localhost:{port}/"
    try:
        async with httpx.AsyncClient(transport=KeepAliveTransport(ssl_context=client_tls)
                                     ) as client:
            result = await client_calls(url, client)
    finally:
        listener.close()
    return result, len(connections)


def ok(body: bytes, *headers: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers)
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_a_chunked_answer_is_read_whole_and_its_connection_reused():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")

    async def calls(url, client):
        return [(await client.get(url)).text for _ in range(2)]

    texts, connections = asyncio.run(scripted([chunked, ok(b"again")], calls))
    assert texts == ["hello, world", "again"]
    assert connections == 1


def test_an_answer_ended_by_closing_the_connection_is_read_to_the_end():
    async def calls(url, client):
        first = await client.get(url)
        return first.text, first.reason_phrase, (await client.get(url)).text

    answers = [b"HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\n\r\nuntil the end<close>",
               ok(b"next")]
    (text, reason, second), connections = asyncio.run(scripted(answers, calls))
    assert (text, reason, second) == ("until the end<close>", "Fine", "next")
    assert connections == 2  # a body ended by the close cannot leave its connection open


def test_informational_answers_are_skipped_and_gzip_is_decoded():
    import gzip

    packed = gzip.compress(b'{"ok": true}')

    async def calls(url, client):
        return (await client.post(url, content=b"{}")).json()

    answer = (b"HTTP/1.1 100 Continue\r\n\r\n"
              + ok(packed, b"Content-Encoding: gzip", b"Content-Type: application/json"))
    assert asyncio.run(scripted([answer], calls))[0] == {"ok": True}


def test_an_answer_cut_short_is_a_protocol_error_and_its_connection_is_not_reused():
    async def calls(url, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)
        return (await client.get(url)).text

    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this<close>"
    text, connections = asyncio.run(scripted([cut, ok(b"fine")], calls))
    assert text == "fine" and connections == 2


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
def test_a_malformed_answer_is_a_protocol_error(garbage):
    async def calls(url, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)

    asyncio.run(scripted([garbage], calls))


def test_a_silent_server_is_a_read_timeout_and_the_connection_is_closed():
    async def calls(url, client):
        transport = client._transport
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url, timeout=httpx.Timeout(5.0, read=0.2))
        return transport.connection_count

    left_open, _ = asyncio.run(scripted([b"HTTP/1.1 200 OK\r\n"], calls))
    assert left_open == 0


def test_a_streamed_request_body_is_sent_chunked_and_a_large_one_whole():
    big = bytes(range(256)) * 4096  # 1 MiB: head and body go out in separate writes
    seen: list[bytes] = []

    async def parts():
        for part in (b"first,", b"", b"second"):
            yield part

    async def calls(url, client):
        await client.post(url, content=parts())
        await client.post(url, content=big)

    asyncio.run(scripted([ok(b""), ok(b"")], calls, requests=seen))
    streamed, whole = seen
    assert streamed.lower().count(b"transfer-encoding: chunked") == 1
    assert streamed.endswith(b"\r\n\r\nfirst,second")
    assert whole.endswith(b"\r\n\r\n" + big)


def test_a_head_request_reads_no_body_and_keeps_the_connection():
    async def calls(url, client):
        head = await client.head(url)
        return head.headers["content-length"], (await client.get(url)).text

    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", ok(b"body")]
    (length, text), connections = asyncio.run(scripted(answers, calls))
    assert (length, text, connections) == ("42", "body", 1)


def test_an_http_1_0_answer_without_keep_alive_closes_its_connection():
    async def calls(url, client):
        return [(await client.get(url)).text for _ in range(2)]

    answers = [b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\none", ok(b"two")]
    texts, connections = asyncio.run(scripted(answers, calls))
    assert texts == ["one", "two"] and connections == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost (made with the openssl command)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_https_answers_are_read_over_one_verified_connection(certificate):
    import ssl

    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def calls(url, client):
        return [(await client.get(url)).text for _ in range(2)]

    texts, connections = asyncio.run(scripted([ok(b"secret one"), ok(b"secret two")], calls,
                                              server_tls=server_tls, client_tls=client_tls))
    assert texts == ["secret one", "secret two"] and connections == 1


def test_an_untrusted_certificate_is_a_connect_error(certificate):
    import ssl

    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def calls(url, client):  # the default context trusts certifi's roots only
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(url)

    asyncio.run(scripted([ok(b"never")], calls, server_tls=server_tls))
