"""`providers.wire.WirePool` over real sockets on 127.0.0.1: raw asyncio servers that answer
the way vendor servers and proxies do (keep-alive, close, chunked, gzip, split, idle closes,
hangs, TLS), and the project's fake server through the OpenAI adapter."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from providers.base import CALLER_BOUNDS_TIME
from providers.errors import ProtocolError, ProviderError, RateLimited, ServerError, Timeout
from providers.fake_server import FakeServer
from providers.http import HTTPProvider
from providers.registry import endpoint_options, provider_class
from providers.wire import KEEPALIVE_S, Origin, WirePool, request_head
from providers.wire_parse import BadResponse, BodyCutShort, ConnectionClosed, Reply
from schemas.config import AppConfig
from schemas.request import LLMRequest

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: A request's bytes as the server read them, and the connection's number.
Seen = list[tuple[int, bytes]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int, Seen], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and Content-Length body), or None at the connection's end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def serving(
    handler: Handler, context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[Origin, Seen]]:
    """A server on a free port whose connections `handler` serves; what it saw."""
    seen: Seen = []
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        try:
            await handler(reader, writer, count, seen)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Origin("https" if context else "http", "127.0.0.1", port), seen
    finally:
        server.close()


def answering(*replies: bytes | None, close_after: bool = False) -> Handler:
    """Answer each request on a connection with the next of `replies` (the last repeats):
    None closes the connection before reading another request, b"" reads one unanswered."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        for i in range(1000):
            reply = replies[min(i, len(replies) - 1)]
            request = None if reply is None else await read_request(reader)
            if reply is None or request is None:
                return
            seen.append((conn, request))
            writer.write(reply)
            await writer.drain()
            if close_after:
                return

    return handler


def request(origin: Origin, path: str = "/v1/x", body: bytes = b"{}") -> bytes:
    made = request_head("POST", f"{origin.scheme}://127.0.0.1:{origin.port}{path}", {})
    assert made is not None
    return made[1] + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def call(pool: WirePool, origin: Origin, data: bytes | None = None) -> Reply:
    return await pool.request(origin, data or request(origin), False, 5.0)


async def test_sequential_calls_share_one_keep_alive_connection() -> None:
    pool = WirePool(10)
    async with serving(answering(OK)) as (origin, seen):
        replies = [await call(pool, origin) for _ in range(5)]
    pool.close()
    assert [r.body for r in replies] == [b"ok"] * 5
    assert {conn for conn, _ in seen} == {1}
    first = seen[0][1]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % origin.port)
    assert b"Accept-Encoding: gzip, deflate\r\n" in first and b"User-Agent: " in first
    assert first.endswith(b"Content-Length: 2\r\n\r\n{}")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\nok",  # no length: the body runs to the close
    ],
    ids=["close", "http/1.0", "to-close"],
)
async def test_connections_the_server_ends_are_not_reused(reply: bytes) -> None:
    pool = WirePool(10)
    async with serving(answering(reply, close_after=True)) as (origin, seen):
        replies = [await call(pool, origin) for _ in range(3)]
    pool.close()
    assert [r.body for r in replies] == [b"ok"] * 3
    assert [conn for conn, _ in seen] == [1, 2, 3]


async def test_chunked_gzip_split_into_single_bytes() -> None:
    packed = gzip.compress(b'{"answer": 42}')
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\nx-trailer: t\r\n\r\n" % (len(packed), packed)
    )

    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        while (req := await read_request(reader)) is not None:
            seen.append((conn, req))
            for i in range(len(reply)):
                writer.write(reply[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    pool = WirePool(10)
    async with serving(trickle) as (origin, seen):
        first, second = await call(pool, origin), await call(pool, origin)
    pool.close()
    assert first.body == second.body == b'{"answer": 42}'
    assert [conn for conn, _ in seen] == [1, 1]


async def test_idle_connections_past_the_keep_alive_are_closed_when_the_pool_is_next_used() -> None:
    # Given three connections, idle in the pool, the two oldest past KEEPALIVE_S,
    pool = WirePool(10)
    async with serving(answering(OK)) as (origin, seen):
        await asyncio.gather(*(call(pool, origin) for _ in range(3)))
        stale, newest = pool._idle[origin][:2], pool._idle[origin][2]
        for conn in stale:
            conn.idle_since -= KEEPALIVE_S + 1
        # when the next call takes a connection, it takes the newest and closes the two stale.
        await call(pool, origin)
        assert pool._idle[origin] == [newest]
        assert all(conn.closed for conn in stale) and not newest.closed
        pool.close()
    assert len({conn for conn, _ in seen}) == 3


async def test_bytes_past_the_answer_are_not_read_as_the_next_calls_answer() -> None:
    # A server that sends two answers to one request (we never pipeline): the second must
    # not be taken for the answer to the next request on that connection.
    other = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
    pool = WirePool(10)
    async with serving(answering(OK + other, OK)) as (origin, seen):
        first, second = await call(pool, origin), await call(pool, origin)
    pool.close()
    assert first.body == second.body == b"ok"
    assert [conn for conn, _ in seen] == [1, 2]


async def test_a_host_is_looked_up_once_for_the_connections_opened_together() -> None:
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    getaddrinfo = loop.getaddrinfo

    async def counted(host: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return await getaddrinfo(host, *args, **kwargs)

    loop.getaddrinfo = counted  # type: ignore[method-assign]
    three = asyncio.Event()

    async def gathered(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        while (req := await read_request(reader)) is not None:
            seen.append((conn, req))
            if len(seen) == 3:
                three.set()
            await three.wait()
            writer.write(OK)
            await writer.drain()

    pool = WirePool(10)
    async with serving(gathered) as (origin, seen):
        # "localhost" may name ::1 first, where nothing listens: the next address is tried.
        named = origin._replace(host="localhost")
        replies = await asyncio.gather(*(call(pool, named, request(origin)) for _ in range(3)))
    pool.close()
    assert [r.body for r in replies] == [b"ok"] * 3
    assert len({conn for conn, _ in seen}) == 3
    assert lookups == ["localhost"]


async def test_a_reused_connection_closed_before_any_answer_byte_is_retried_once() -> None:
    # The server reads the second request on a connection and closes it unanswered, as a
    # server whose idle timeout raced the request does.
    pool = WirePool(10)
    async with serving(answering(OK, b"", None)) as (origin, seen):
        first = await call(pool, origin)
        second = await call(pool, origin)
    pool.close()
    assert first.body == second.body == b"ok"
    # The request went out on connection 1, unanswered, then once on a new connection.
    assert [conn for conn, _ in seen] == [1, 1, 2]


async def test_a_connection_that_received_any_byte_is_never_retried() -> None:
    pool = WirePool(10)
    async with serving(answering(OK, b"HTTP/1.1 200 OK\r\n", None)) as (origin, seen):
        await call(pool, origin)
        with pytest.raises(BadResponse):
            await call(pool, origin)
    pool.close()
    assert [conn for conn, _ in seen] == [1, 1]


async def test_a_new_connection_closed_unanswered_is_not_retried() -> None:
    pool = WirePool(10)
    async with serving(answering(b"", None)) as (origin, seen):
        with pytest.raises(ConnectionClosed):
            await call(pool, origin)
    pool.close()
    assert len(seen) == 1


async def test_a_body_cut_short_fails_and_the_next_call_uses_a_new_connection() -> None:
    pool = WirePool(10)
    cut = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'
    async with serving(answering(cut, close_after=True)) as (origin, seen):
        with pytest.raises(BodyCutShort):
            await call(pool, origin)
        with pytest.raises(BodyCutShort):
            await call(pool, origin)
    pool.close()
    assert [conn for conn, _ in seen] == [1, 2]


async def test_a_cancelled_call_closes_its_connection_and_frees_its_slot() -> None:
    # Given a server that reads requests and never answers,
    closed = asyncio.Event()

    async def hung(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        req = await read_request(reader)
        assert req is not None
        seen.append((conn, req))
        if await reader.read() == b"":  # the client closed its end
            closed.set()

    pool = WirePool(1)
    async with serving(hung) as (origin, seen):
        # when the caller's deadline cancels the call,
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call(pool, origin), 0.2)
        # then the server sees the connection closed, not left half-read in the pool,
        await asyncio.wait_for(closed.wait(), 5)
        # and the pool's one slot is free: the next call opens a new connection.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call(pool, origin), 0.2)
    pool.close()
    assert [conn for conn, _ in seen] == [1, 2]


async def test_at_most_limit_connections_are_in_use_and_waiters_go_in_order() -> None:
    active = 0
    peak = 0
    release = asyncio.Event()
    two = asyncio.Event()

    async def slow(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        nonlocal active, peak
        while (req := await read_request(reader)) is not None:
            seen.append((conn, req))
            if len(seen) == 2:
                two.set()
            active += 1
            peak = max(peak, active)
            await release.wait()
            active -= 1
            writer.write(OK)
            await writer.drain()

    pool = WirePool(2)
    async with serving(slow) as (origin, seen):
        calls = [asyncio.ensure_future(call(pool, origin)) for _ in range(6)]
        await asyncio.wait_for(two.wait(), 5)
        assert (pool._active, len(pool._waiters)) == (2, 4)
        release.set()
        replies = await asyncio.gather(*calls)
    pool.close()
    assert [r.body for r in replies] == [b"ok"] * 6
    assert peak == 2
    assert len({conn for conn, _ in seen}) == 2


async def test_a_cancelled_waiter_does_not_take_a_slot() -> None:
    pool = WirePool(1)
    gate = asyncio.Event()
    arrived = asyncio.Event()

    async def gated(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        while (req := await read_request(reader)) is not None:
            seen.append((conn, req))
            arrived.set()
            await gate.wait()
            writer.write(OK)
            await writer.drain()

    async with serving(gated) as (origin, _):
        holder = asyncio.ensure_future(call(pool, origin))
        await asyncio.wait_for(arrived.wait(), 5)
        waiter = asyncio.ensure_future(call(pool, origin))
        await asyncio.sleep(0)  # the waiter runs up to its wait for a slot
        assert len(pool._waiters) == 1
        waiter.cancel()
        gate.set()
        assert (await holder).body == b"ok"
        assert (await call(pool, origin)).body == b"ok"
    pool.close()
    assert waiter.cancelled()


async def test_connection_refused_is_an_os_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = WirePool(10)
    with pytest.raises(OSError):
        await call(pool, Origin("http", "127.0.0.1", port))


@pytest.mark.parametrize(
    "case",
    [
        test_sequential_calls_share_one_keep_alive_connection,
        test_chunked_gzip_split_into_single_bytes,
        test_a_reused_connection_closed_before_any_answer_byte_is_retried_once,
        test_a_connection_that_received_any_byte_is_never_retried,
        test_a_cancelled_call_closes_its_connection_and_frees_its_slot,
        test_at_most_limit_connections_are_in_use_and_waiters_go_in_order,
    ],
    ids=lambda case: case.__name__.removeprefix("test_"),
)
def test_on_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    """The same cases on uvloop's loop, which workers run jobs on when it is installed."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(case())  # type: ignore[arg-type]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make a certificate")
async def test_tls_verifies_the_server_against_the_ca_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    async with serving(answering(OK), served) as (origin, seen):
        # An untrusted certificate is refused,
        with pytest.raises(ssl.SSLCertVerificationError):
            await call(WirePool(10), origin)
        # and one the CA files name is accepted (SSL_CERT_FILE: read when the context is made).
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        pool = WirePool(10)
        replies = [await call(pool, origin) for _ in range(2)]
    pool.close()
    assert [r.body for r in replies] == [b"ok"] * 2
    assert [conn for conn, _ in seen][-2:] == [seen[-1][0]] * 2  # kept alive over TLS


def openai_adapter(base_url: str, pool: WirePool, **settings: object) -> HTTPProvider:
    """The OpenAI adapter of an endpoint at `base_url`, calling through `pool`."""
    endpoint = {"provider": "openai", "base_url": base_url, "api_key": "sk-wire-secret"}
    config = AppConfig.model_validate({"endpoints": {"e": {**endpoint, "model": "m", **settings}}})
    cfg = config.endpoints["e"]
    provider = provider_class("openai")("e", cfg, endpoint_options("e", cfg))
    assert isinstance(provider, HTTPProvider)
    provider.wire = pool
    return provider


async def test_requests_to_the_fake_server_through_the_openai_adapter() -> None:
    pool = WirePool(10)
    async with FakeServer(rpm=3, limit_algorithm="window") as server:
        provider = openai_adapter(server.openai_url, pool)
        CALLER_BOUNDS_TIME.set(True)
        answers = []
        for i in range(3):
            request = LLMRequest.chat(f"id {i}/ü", [{"role": "user", "content": f"hi {i}"}])
            answers.append(await provider.generate(request, "gpt-test"))
        with pytest.raises(RateLimited) as limited:
            await provider.generate(request, "gpt-test")
        calls = server.calls()
    pool.close()
    assert [a.text for a in answers] == ["hi 0", "hi 1", "hi 2"]
    assert [a.rate_limits.requests.limit for a in answers if a.rate_limits] == [3, 3, 3]
    assert [c.custom_id for c in calls][:3] == ["id 0/ü", "id 1/ü", "id 2/ü"]
    assert limited.value.retry_after_s is not None
    assert "sk-wire-secret" not in repr(pool) + repr(provider._wire_heads) + str(limited.value)


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", ServerError, "body cut short"),
        (b"", ServerError, "connection failed"),  # closed unanswered
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", ServerError, "connection failed"),
        (None, Timeout, "no complete answer within 0.3s"),  # never answers
    ],
    ids=["cut", "closed", "malformed", "hung"],
)
async def test_adapter_errors_map_as_over_aiohttp(
    reply: bytes | None, error: type[ProviderError], words: str
) -> None:
    pool = WirePool(10)
    handler = answering(b"") if reply is None else answering(reply, None)
    async with serving(handler) as (origin, seen):
        provider = openai_adapter(f"http://127.0.0.1:{origin.port}", pool, timeout_s=0.3)
        with pytest.raises(ProviderError) as caught:
            await provider.generate(LLMRequest.chat("c", [{"role": "user", "content": "x"}]), "m")
    pool.close()
    assert type(caught.value) is error
    assert words in str(caught.value) and "sk-wire-secret" not in str(caught.value)
    assert caught.value.__cause__ is None and len(seen) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make a certificate")
def test_tls_on_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test_tls_verifies_the_server_against_the_ca_certificates(tmp_path, monkeypatch))


async def test_a_posted_call_sends_the_bytes_send_does_with_its_head_built_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    pool = WirePool(10)
    async with serving(answering(ok)) as (origin, seen):
        provider = openai_adapter(f"http://127.0.0.1:{origin.port}/v1", pool)
        built = 0
        base_headers = provider.base_headers

        def counted(custom_id: str | None = None) -> dict[str, str]:
            nonlocal built
            built += 1
            return base_headers(custom_id)

        provider.base_headers = counted  # type: ignore[method-assign]
        body = {"model": "m", "messages": []}
        for custom_id in ("id 0/ü", "id 1/ü", "id 2/ü"):
            await provider.post("/chat/completions", custom_id, body)
        posted = built
        await provider.send("POST", "/chat/completions", provider.headers("id 2/ü"), body)
    pool.close()
    # Given three posts and a send of the third's request, when the server reads them,
    # then the send's bytes are the third post's, and the posts built their headers once.
    assert [request for _, request in seen][2] == seen[3][1]
    assert b"x-batchyard-custom-id: id%200/%C3%BC\r\n" in seen[0][1]
    assert posted == 1


def two_mib_answers() -> list[bytes]:
    """A 2 MiB answer sent as is, and ~2 KB of gzip that decode to 2 MiB."""
    body = b'{"id": "x", "pad": "' + b"a" * (2 << 20) + b'"}'
    packed = gzip.compress(body)
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    bomb = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
        len(packed),
        packed,
    )
    return [plain, bomb]


@pytest.mark.parametrize("client", ["wire", "aiohttp"])
@pytest.mark.parametrize("answer", [0, 1], ids=["plain", "gzip"])
async def test_an_answer_longer_than_max_response_mb_fails_the_call_unread(
    client: str, answer: int
) -> None:
    import aiohttp

    pool = WirePool(10)
    big, ok = answering(two_mib_answers()[answer]), answering(OK)

    async def first_big(
        r: asyncio.StreamReader, w: asyncio.StreamWriter, conn: int, seen: Seen
    ) -> None:
        await (big if conn == 1 else ok)(r, w, conn, seen)

    async with serving(first_big) as (origin, seen), aiohttp.ClientSession() as s:
        provider = openai_adapter(f"http://127.0.0.1:{origin.port}", pool, max_response_mb=1)
        if client == "aiohttp":
            provider.wire = None
            provider.session = s
        # Given an endpoint whose answers may be 1 MiB and a server answering 2 MiB (as
        # sent, or once its gzip is decoded), the call fails naming the setting,
        with pytest.raises(ProviderError) as caught:
            await provider.send("POST", "/chat/completions", provider.headers(), {})
        # and the connection it came on is not used again: the next call opens another.
        again = await provider.send("POST", "/chat/completions", provider.headers(), {})
    pool.close()
    assert type(caught.value) is ProtocolError and caught.value.code == "protocol_error"
    assert "longer than max_response_mb (1 MiB)" in str(caught.value)
    assert caught.value.__cause__ is None
    assert again.body == b"ok" and [conn for conn, _ in seen] == [1, 2]
