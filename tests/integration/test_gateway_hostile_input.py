"""Requests a security review sent to the gateway (issue #19, S1-S7): ids naming other Redis
keys, cut multipart bodies, session posts without an Origin, trickling bodies, stream floods,
bursts across a clock minute, a tripped login limit in a browser. Each gets a clear 4xx (or is
cut), never a 500 or a held connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.integration.test_dashboard import login
from tests.integration.test_gateway_api import new_batch, settled, upload
from tests.integration.test_gateway_support import (
    KEY_A,
    api,
    auth,
    chat_line,
    gateway_config,
    jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
__all__ = ["api", "gateway_config"]  # fixtures used by name

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
