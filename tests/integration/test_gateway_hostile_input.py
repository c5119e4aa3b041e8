"""Requests a security review sent to the gateway (issue #19, S1-S7): ids naming other Redis
keys, cut multipart bodies, session posts without an Origin, trickling bodies, stream floods,
bursts across a clock minute, a tripped login limit in a browser. Each gets a clear 4xx (or is
cut), never a 500 or a held connection."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.integration.test_dashboard import login
from tests.integration.test_gateway_api import new_batch, settled, upload
from tests.integration.test_gateway_support import (
    KEY_A,
    GatewayProcess,
    api,
    auth,
    chat_line,
    gateway_config,
    gateway_proc,
    jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
__all__ = ["api", "gateway_config", "gateway_proc"]  # fixtures used by name

Api = Callable[..., Any]
Http = TestClient[Any, Any]


async def raw_exchange(client: Http, request: bytes, timeout_s: float = 10) -> bytes:
    """Send `request` bytes on a fresh connection; everything the gateway answers."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await reader.read()
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_s3_file_ids_naming_other_redis_keys_are_404_not_500(api: Api) -> None:
    client = await api()
    resp = await upload(client, KEY_A, jsonl([chat_line("a")]))
    file_id = (await resp.json())["id"]
    batch = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    for path in (
        f"/v1/files/{file_id}:data",
        f"/v1/files/{file_id}:data/content",
        f"/v1/batches/{batch['id']}:timeline",
        f"/v1/batches/{batch['id']}:seen",
        f"/v1/files/file-{batch['id']}:timeline-output",
    ):
        got = await client.get(path, headers=auth(KEY_A))
        assert got.status == 404, (path, got.status, await got.text())
        assert (await got.json())["error"]["message"].startswith("No ")
    got = await client.delete(f"/v1/files/{file_id}:data", headers=auth(KEY_A))
    assert got.status == 404
    body = {"input_file_id": f"{file_id}:data", "endpoint": "/v1/chat/completions"}
    got = await client.post(
        "/v1/batches", json={**body, "completion_window": "24h"}, headers=auth(KEY_A)
    )
    assert got.status == 404


async def test_s4_a_cut_multipart_upload_is_400_naming_the_problem(api: Api) -> None:
    client = await api()
    boundary = "cutboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        "\r\n"
    ).encode() + jsonl([chat_line("a")])  # no closing boundary: the body ends mid-part
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {KEY_A}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = await raw_exchange(client, head + body)
    assert status_of(answer) == 400, answer
    assert b"multipart" in answer.lower()
    # A part header cut short is refused the same way.
    cut = f"--{boundary}\r\nContent-Disposition: form-da".encode()
    head = head.replace(
        f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(cut)}".encode()
    )
    answer = await raw_exchange(client, head + cut)
    assert status_of(answer) == 400, answer


async def test_s6_a_session_post_without_origin_is_refused_even_with_the_token(api: Api) -> None:
    client = await api()
    browser = await login(client, KEY_A)
    created = await new_batch(client, KEY_A, jsonl([chat_line("a"), chat_line("b")]))
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    # The right CSRF token but no Origin header (docs: a same-origin Origin is required),
    resp = await browser.post(f"/v1/batches/{batch_id}/cancel", origin=False)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"
    resp = await browser.post(
        f"/batches/{batch_id}/cancel", data={"csrf_token": browser.csrf}, origin=False
    )
    assert resp.status == 403
    batch = await (await client.get(f"/v1/batches/{batch_id}", headers=auth(KEY_A))).json()
    assert batch["status"] == "in_progress"
    # while the same post from the gateway's own origin goes through.
    resp = await browser.post(f"/v1/batches/{batch_id}/cancel")
    assert resp.status == 200
    # A login from no page at all (no Origin) is refused too.
    async with aiohttp.ClientSession() as plain:
        resp = await plain.post(
            client.make_url("/login"), data={"api_key": KEY_A}, allow_redirects=False
        )
        assert resp.status == 403


def post_head(path: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY_A}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def trickle(port: int, head: bytes, every_s: float, limit_s: float) -> bytes:
    """Send `head`, then one body byte every `every_s` (at most 200); what comes back
    within `limit_s` (the test fails past it: the body was never cut)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def feed() -> None:
        writer.write(head)
        for _ in range(200):
            await asyncio.sleep(every_s)
            writer.write(b" ")
            await writer.drain()

    feeding = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(limit_s):
            return await reader.read()
    finally:
        feeding.cancel()
        writer.close()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/v1/jobs", "application/json"), ("/v1/files", "multipart/form-data; boundary=x")],
)
async def test_s1_a_trickling_authenticated_body_is_cut_with_408(
    api: Api, path: str, content_type: str
) -> None:
    client = await api(body_idle_timeout_s=1, body_total_timeout_s=3)
    assert client.server.port is not None
    # A byte every 0.3 s is never idle for 1 s, but never completes either: cut at 3 s.
    answer = await trickle(client.server.port, post_head(path, 10_000, content_type), 0.3, 20)
    assert status_of(answer) == 408, answer
    assert b"request_timeout" in answer and b"too slowly" in answer
    # A body that stops arriving is cut once idle.
    answer = await trickle(client.server.port, post_head(path, 10_000, content_type), 60, 20)
    assert status_of(answer) == 408, answer
    # The gateway still serves everyone else.
    assert (await client.get("/v1/batches", headers=auth(KEY_A))).status == 200


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_s1_default_deadline_cuts_a_stalled_body_in_35_s_and_sigterm_does_not_wait(
    redis_url: str, gateway_proc: Callable[..., GatewayProcess]
) -> None:
    gateway = gateway_proc(redis_url)  # the default body deadlines: 30 s idle, 5 min total
    loop = asyncio.get_running_loop()
    # A body that stalls after its first bytes is cut with 408 within 35 s,
    start = loop.time()
    answer = await trickle(gateway.port, post_head("/v1/jobs", 10_000) + b'{"a', 600, 35)
    assert status_of(answer) == 408 and loop.time() - start < 35, answer
    # and one that trickles (never idle, not yet 5 min old) does not hold SIGTERM.
    head = post_head("/v1/files", 10_000, "multipart/form-data; boundary=x")
    trickling = asyncio.create_task(trickle(gateway.port, head, 2, 30))
    await asyncio.to_thread(gateway.wait_ready)  # it is being served meanwhile
    assert not trickling.done()
    gateway.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(gateway.proc.wait, 15)
    assert code == 0, gateway.stderr()
    answer = await trickling
    assert answer == b"" or status_of(answer) == 408, answer


async def test_s2_one_key_gets_429_past_its_open_stream_cap(api: Api, redis_url: str) -> None:
    client = await api()
    batch = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    await settled(client, KEY_A, batch["id"])
    url = client.make_url(f"/v1/batches/{batch['id']}/events?interval=0.05")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        opened = await asyncio.gather(*(session.get(url, headers=auth(KEY_A)) for _ in range(300)))
        try:
            statuses = sorted(r.status for r in opened)
            assert statuses == [200] * 20 + [429] * 280  # max_streams_per_key
            refused = next(r for r in opened if r.status == 429)
            assert (await refused.json())["error"]["code"] == "too_many_streams"
            assert refused.headers["Retry-After"]
        finally:
            for resp in opened:
                resp.close()
        # Closing streams gives their slots back.
        deadline = asyncio.get_running_loop().time() + 10
        while (await session.get(url, headers=auth(KEY_A))).status != 200:
            assert asyncio.get_running_loop().time() < deadline, "slots never came back"


async def test_s2_an_interval_below_the_floor_is_raised_to_it(api: Api, redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = await api(min_stream_interval_s=0.5)
    batch = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    await settled(client, KEY_A, batch["id"])
    stats = aioredis.Redis.from_url(redis_url)

    async def looks() -> int:
        # each look of a batch stream reads both batch hashes
        info = await stats.info("commandstats")
        return int(info.get("cmdstat_hgetall", {}).get("calls", 0))

    try:
        resp = await client.get(
            f"/v1/batches/{batch['id']}/events?interval=0.05", headers=auth(KEY_A)
        )
        await resp.content.readline()  # the first event has been sent
        loop = asyncio.get_running_loop()
        start, before = loop.time(), await looks()
        while loop.time() - start < 2:  # a bounded watch of the stream's pace
            await stats.ping()
        elapsed, reads = loop.time() - start, await looks() - before
        resp.close()
        # At 0.05 s it would read ~2 x 40 times in 2 s; at the 0.5 s floor at most ~2 x 5.
        assert reads <= 2 * (elapsed / 0.5 + 2), (reads, elapsed)
    finally:
        await stats.aclose()


async def test_s7_the_key_rate_is_a_sliding_window_not_a_clock_minute(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    import types

    from producers.gateway import limits

    now = [60.0 * 29_000_000 + 59.5]  # half a second before a clock minute ends
    monkeypatch.setattr(
        limits, "time", types.SimpleNamespace(time=lambda: now[0], monotonic=time.monotonic)
    )
    client = await api(rate_per_min=10)

    async def burst(n: int) -> list[int]:
        return [(await client.get("/v1/batches", headers=auth(KEY_A))).status for _ in range(n)]

    assert await burst(10) == [200] * 10
    now[0] += 1.0  # the next clock minute: a fixed window would let 10 more through
    statuses = await burst(10)
    assert statuses.count(200) <= 1 and statuses.count(429) >= 9
    refused = await client.get("/v1/batches", headers=auth(KEY_A))
    assert refused.status == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    now[0] += 61.0  # a full window later the key has its whole rate back
    assert await burst(10) == [200] * 10


async def test_s7_a_tripped_login_limit_shows_the_form_with_a_readable_message(
    api: Api,
) -> None:
    from tests.integration.test_dashboard import own_origin

    client = await api(login_per_min=2)
    origin = {"Origin": own_origin(client)}
    answers = [
        await client.post("/login", data={"api_key": "sk-guess", "next": "/"}, headers=origin)
        for _ in range(3)
    ]
    assert [a.status for a in answers] == [401, 401, 429]
    tripped = answers[-1]
    assert tripped.content_type == "text/html" and tripped.headers["Retry-After"]
    page = await tripped.text()
    assert "Too many login attempts" in page and 'name="api_key"' in page
    assert '{"error"' not in page  # not the API's JSON
