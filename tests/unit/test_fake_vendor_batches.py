"""The fake server's vendor batch APIs: OpenAI Files + Batches, Anthropic Message Batches."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from providers.fake_server import FakeServer
from providers.fake_server.__main__ import parser
from providers.fake_server.batch_state import BatchKnobs

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}


def openai_file(n: int, prefix: str = "r") -> bytes:
    lines = [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]},
        }
        for i in range(n)
    ]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def openai_batch(session: aiohttp.ClientSession, server: FakeServer, n: int) -> Any:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", openai_file(n), filename="in.jsonl")
    async with session.post(server.openai_url + "/files", data=form) as r:
        assert r.status == 200, await r.text()
        uploaded = await r.json()
    assert uploaded["object"] == "file" and uploaded["purpose"] == "batch"
    body = {
        "input_file_id": uploaded["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    async with session.post(server.openai_url + "/batches", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 200, await r.text()
        return await r.json(content_type=None)


async def lines(session: aiohttp.ClientSession, url: str) -> list[Any]:
    async with session.get(url, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 200, await r.text()
        return [orjson.loads(line) for line in (await r.read()).splitlines()]


async def test_openai_batch_completes_with_output_and_error_files() -> None:
    async with (
        FakeServer(batches=BatchKnobs(fail_fraction=0.1)) as server,
        aiohttp.ClientSession() as session,
    ):
        created = await openai_batch(session, server, 20)
        assert created["object"] == "batch"
        assert created["id"].startswith("batch_")
        batch = await get(session, f"{server.openai_url}/batches/{created['id']}")
        assert batch["status"] == "completed"
        assert batch["request_counts"] == {"total": 20, "completed": 18, "failed": 2}
        out = await lines(session, f"{server.openai_url}/files/{batch['output_file_id']}/content")
        err = await lines(session, f"{server.openai_url}/files/{batch['error_file_id']}/content")
    assert len(out) == 18 and len(err) == 2
    assert {line["custom_id"] for line in out + err} == {f"r{i}" for i in range(20)}
    first = out[0]
    assert first["response"]["status_code"] == 200 and first["error"] is None
    assert first["response"]["body"]["object"] == "chat.completion"
    assert err[0]["response"]["status_code"] == 500
    assert server.calls(path="/v1/chat/completions") == []  # no live call


async def test_openai_batch_that_never_finishes_is_cancelled() -> None:
    async with (
        FakeServer(batches=BatchKnobs(never_finish=True)) as server,
        aiohttp.ClientSession() as session,
    ):
        created = await openai_batch(session, server, 3)
        url = f"{server.openai_url}/batches/{created['id']}"
        assert (await get(session, url))["status"] == "in_progress"
        async with session.post(url + "/cancel") as r:
            assert r.status == 200
            assert (await r.json())["status"] in ("cancelling", "cancelled")
        batch = await get(session, url)
        assert batch["status"] == "cancelled"
        assert batch["output_file_id"] is None
        err = await lines(session, f"{server.openai_url}/files/{batch['error_file_id']}/content")
    assert [line["error"]["code"] for line in err] == ["batch_cancelled"] * 3
    assert server.batches.cancels() == [created["id"]]


async def test_openai_upload_names_the_bad_line() -> None:
    async with FakeServer() as server, aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", openai_file(2) + b"{oops\n", filename="in.jsonl")
        async with session.post(server.openai_url + "/files", data=form) as r:
            assert r.status == 400
            assert "line 3" in (await r.json())["error"]["message"]


async def test_anthropic_message_batch_results_and_cancel() -> None:
    requests = [
        {
            "custom_id": f"a{i}",
            "params": {
                "model": "claude-x",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"hi {i}"}],
            },
        }
        for i in range(10)
    ]
    async with (
        FakeServer(batches=BatchKnobs(fail_fraction=0.1)) as server,
        aiohttp.ClientSession() as session,
    ):
        url = server.url + "/v1/messages/batches"
        async with session.post(url, json={"requests": requests}, headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 200, await r.text()
            created = await r.json()
        assert created["type"] == "message_batch"
        batch = await get(session, f"{url}/{created['id']}")
        assert batch["processing_status"] == "ended"
        assert batch["request_counts"]["succeeded"] == 9
        assert batch["request_counts"]["errored"] == 1
        results = await lines(session, batch["results_url"])
    types = sorted(line["result"]["type"] for line in results)
    assert types == ["errored"] + ["succeeded"] * 9
    ok = next(line for line in results if line["result"]["type"] == "succeeded")
    assert ok["result"]["message"]["type"] == "message"

    async with (
        FakeServer(batches=BatchKnobs(never_finish=True)) as server,
        aiohttp.ClientSession() as session,
    ):
        url = server.url + "/v1/messages/batches"
        async with session.post(url, json={"requests": requests}, headers=ANTHROPIC_HEADERS) as r:
            created = await r.json()
        batch = await get(session, f"{url}/{created['id']}")
        assert batch["processing_status"] == "in_progress"
        assert batch["results_url"] is None
        async with session.post(f"{url}/{created['id']}/cancel", headers=ANTHROPIC_HEADERS):
            pass
        batch = await get(session, f"{url}/{created['id']}")
        assert batch["processing_status"] == "ended"
        assert batch["request_counts"]["canceled"] == 10
        results = await lines(session, batch["results_url"])
    assert {line["result"]["type"] for line in results} == {"canceled"}


def test_cli_knobs() -> None:
    args = parser().parse_args(["--batch-delay-s", "30", "--batch-fail-fraction", "0.1"])
    assert args.batch_delay_s == 30 and args.batch_fail_fraction == 0.1
    assert not args.batch_never_finish
