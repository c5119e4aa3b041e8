"""The gateway's HTTP API in-process against a real redis-server, without workers: results
are written the way workers write them, so every test is fast and deterministic."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from openai.types.chat import ChatCompletion

from producers.client import Client
from producers.core import SubmitReport
from producers.gateway.state import GATEWAY
from schemas.result import ErrorInfo, LLMResult
from tests.integration.test_gateway_support import (
    KEY_A,
    KEY_A_READ,
    KEY_B,
    api,
    auth,
    chat_line,
    gateway_config,
    jsonl,
    write_results,
)
from workers.protocol.lanes import endpoint_queues
from workers.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
__all__ = ["api", "gateway_config"]  # fixtures used by name

Api = Callable[..., Any]
Http = TestClient[Any, Any]


async def upload(client: Http, key: str, data: bytes, purpose: str = "batch") -> Any:
    form = aiohttp.FormData()
    form.add_field("purpose", purpose)
    form.add_field("file", data, filename="in.jsonl", content_type="application/jsonl")
    return await client.post("/v1/files", data=form, headers=auth(key))


async def new_batch(client: Http, key: str, data: bytes, **extra: Any) -> dict[str, Any]:
    resp = await upload(client, key, data)
    assert resp.status == 200, await resp.text()
    file_id = (await resp.json())["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **extra,
    }
    resp = await client.post("/v1/batches", json=body, headers=auth(key))
    assert resp.status == 200, await resp.text()
    batch: dict[str, Any] = await resp.json()
    return batch


async def settled(client: Http, key: str, batch_id: str, timeout_s: float = 10) -> dict[str, Any]:
    """The batch once validation is over (any status but `validating`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await client.get(f"/v1/batches/{batch_id}", headers=auth(key))
        batch: dict[str, Any] = await resp.json()
        if batch["status"] != "validating" and (
            batch["status"] != "in_progress" or batch["request_counts"]["total"]
        ):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch['status']}"
        await client.get("/healthz")  # one round trip of pause, no sleep


def queued(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.hlen(f"batchyard:dq:{q}.msgs")) for q in endpoint_queues("mock"))
    finally:
        client.close()


def succeeded(batch_id: str, custom_id: str, text: str) -> LLMResult:
    return LLMResult(
        custom_id=custom_id, batch_id=batch_id, status="succeeded", output=text, model="m"
    )


def errored(batch_id: str, custom_id: str) -> LLMResult:
    error = ErrorInfo(code="invalid_request", message="the provider refused it")
    return LLMResult(custom_id=custom_id, batch_id=batch_id, status="errored", error=error)


async def test_requests_without_a_known_key_get_401_and_errors_have_openai_shape(api: Api) -> None:
    client = await api()
    resp = await client.get("/v1/batches")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    body = await resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "invalid_api_key"
    assert (await client.get("/v1/batches", headers=auth("sk-wrong"))).status == 401
    assert (await client.get("/v1/files/x", headers={"Authorization": KEY_A})).status == 401
    # Health and metrics need no key; unknown paths are 404 in the same error shape.
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/v1/nothing", headers=auth(KEY_A))
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_read_only_key_views_its_tenant_objects_but_cannot_change_anything(
    api: Api,
) -> None:
    client = await api()
    file_id = (await (await upload(client, KEY_A, jsonl([chat_line("a")]))).json())["id"]
    # The dashboard key shares tenant A: it sees A's file ...
    assert (await client.get(f"/v1/files/{file_id}", headers=auth(KEY_A_READ))).status == 200
    # ... but may not upload, create or cancel.
    resp = await upload(client, KEY_A_READ, jsonl([chat_line("a")]))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "insufficient_permissions"
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    resp = await client.post("/v1/batches", json=body, headers=auth(KEY_A_READ))
    assert resp.status == 403
    assert (await client.post("/v1/jobs", json={}, headers=auth(KEY_A_READ))).status == 403


async def test_small_uploads_live_in_redis_large_ones_on_disk_and_only_the_owner_sees_them(
    api: Api, redis_url: str, tmp_path: Path
) -> None:
    client = await api(small_file_kib=1)
    small = jsonl([chat_line("s")])
    large = jsonl([chat_line(f"l{i}", "x" * 100) for i in range(100)])
    assert len(small) < 1024 < len(large)
    ids = {}
    for name, data in (("small", small), ("large", large)):
        resp = await upload(client, KEY_A, data)
        assert resp.status == 200
        obj = await resp.json()
        assert obj["object"] == "file" and obj["purpose"] == "batch"
        assert obj["bytes"] == len(data)
        ids[name] = obj["id"]
        content = await client.get(f"/v1/files/{obj['id']}/content", headers=auth(KEY_A))
        assert await content.read() == data
        # Another tenant gets 404 — not 403 — for the file and its content.
        for path in (f"/v1/files/{obj['id']}", f"/v1/files/{obj['id']}/content"):
            assert (await client.get(path, headers=auth(KEY_B))).status == 404
    on_disk = sorted(p.name for p in (tmp_path / "files" / "batchyard").iterdir())
    assert on_disk == [f"{ids['large']}.jsonl"]
    r = redis.Redis.from_url(redis_url)
    assert r.get(f"batchyard:gw:file:{ids['small']}:data") == small
    r.close()
    resp = await client.delete(f"/v1/files/{ids['large']}", headers=auth(KEY_A))
    assert (await resp.json())["deleted"] is True
    assert not list((tmp_path / "files" / "batchyard").iterdir())
    assert (await client.get(f"/v1/files/{ids['large']}", headers=auth(KEY_A))).status == 404


async def test_uploads_over_the_size_or_line_limit_get_413_and_leave_nothing_behind(
    api: Api, tmp_path: Path
) -> None:
    client = await api(max_upload_mib=1, max_file_lines=3, small_file_kib=1)
    too_big = jsonl([chat_line(f"b{i}", "y" * 600_000) for i in range(2)])
    resp = await upload(client, KEY_A, too_big)
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error["code"] == "file_too_large" and "1 MiB" in error["message"]
    resp = await upload(client, KEY_A, jsonl([chat_line(f"n{i}") for i in range(4)]))
    assert resp.status == 413
    assert "3 lines" in (await resp.json())["error"]["message"]
    storage = tmp_path / "files" / "batchyard"
    assert not storage.exists() or not list(storage.iterdir())


async def test_bad_upload_forms_are_400_naming_the_field(api: Api) -> None:
    client = await api()
    resp = await upload(client, KEY_A, jsonl([chat_line("a")]), purpose="fine-tune")
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "purpose"
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("purpose", "batch")
    form.add_field("expires_after[seconds]", "3600")  # accepted and ignored
    resp = await client.post("/v1/files", data=form, headers=auth(KEY_A))
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "file"
    resp = await client.post(
        "/v1/batches",
        json={"input_file_id": "file-x", "endpoint": "/v1/images/edits", "completion_window": "1h"},
        headers=auth(KEY_A),
    )
    assert (await resp.json())["error"]["param"] == "endpoint"
    resp = await client.post(
        "/v1/batches",
        json={"endpoint": "/v1/chat/completions", "completion_window": "24h"},
        headers=auth(KEY_A),
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "input_file_id"
    resp = await client.post(
        "/v1/batches",
        json={
            "input_file_id": "file-x",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "priority": "urgent",
        },
        headers=auth(KEY_A),
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "priority"


async def test_a_batch_priority_puts_its_requests_on_that_lane(api: Api, redis_url: str) -> None:
    client = await api()
    created = await new_batch(client, KEY_A, jsonl([chat_line("u")]), priority="high")
    batch = await settled(client, KEY_A, created["id"])
    assert batch["request_counts"]["total"] == 1
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.llen("batchyard:dq:llm.mock@high") == 1
        assert r.hget(f"batchyard:batch:{batch['id']}", "lane") == b"@high"
    finally:
        r.close()


MALFORMED: dict[str, tuple[bytes, dict[str, Any], list[tuple[int, str, str | None]]]] = {
    "not jsonl": (
        b"hello\n" + jsonl([chat_line("ok")]) + b"[1, 2]\n",
        {},
        [
            (1, "invalid_json_line", None),
            (3, "invalid_json_line", None),
        ],
    ),
    "mixed urls": (
        jsonl([chat_line("a"), {**chat_line("b"), "url": "/v1/embeddings"}, chat_line("c")]),
        {},
        [(2, "url_mismatch", "url")],
    ),
    "duplicate custom_ids": (
        jsonl([chat_line("a"), chat_line("b"), chat_line("a"), chat_line("b")]),
        {},
        [(3, "duplicate_custom_id", "custom_id"), (4, "duplicate_custom_id", "custom_id")],
    ),
    "over the line limit": (
        jsonl([chat_line(f"r{i}") for i in range(5)]),
        {"max_batch_lines": 3},
        [(4, "too_many_tasks", None)],
    ),
    "bad field": (
        jsonl([chat_line("a"), {**chat_line("b"), "body": {"model": "m"}}]),
        {},
        [(2, "invalid_request", "body.messages")],
    ),
    "empty file": (b"\n\n", {}, [(0, "empty_file", None)]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_files_fail_the_batch_with_line_numbered_errors(
    api: Api, redis_url: str, case: str
) -> None:
    data, limits, expected = MALFORMED[case]
    client = await api(**limits)
    created = await new_batch(client, KEY_A, data)
    assert created["status"] == "validating"
    batch = await settled(client, KEY_A, created["id"])
    assert batch["status"] == "failed"
    assert batch["failed_at"] is not None
    assert batch["errors"]["object"] == "list"
    got = [(e["line"] or 0, e["code"], e["param"]) for e in batch["errors"]["data"]]
    assert got == expected
    for entry in batch["errors"]["data"]:
        if entry["line"]:
            assert entry["message"].startswith(f"line {entry['line']}")
    # Like OpenAI, nothing of a bad file runs: no request was queued.
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert queued(redis_url) == 0


async def test_batch_runs_to_completion_with_live_counts_and_openai_output_files(
    api: Api, redis_url: str
) -> None:
    client = await api()
    created = await new_batch(
        client,
        KEY_A,
        jsonl([chat_line(f"q{i}", f"question {i}") for i in range(3)]),
        metadata={"job": "nightly"},
    )
    batch = await settled(client, KEY_A, created["id"])
    assert batch["status"] == "in_progress"
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["metadata"] == {"job": "nightly"}
    assert queued(redis_url) == 3
    # Given two answers and one provider error, the batch completes,
    write_results(redis_url, batch["id"], [succeeded(batch["id"], "q0", "a0")])
    resp = await client.get(f"/v1/batches/{batch['id']}", headers=auth(KEY_A))
    assert (await resp.json())["request_counts"]["completed"] == 1  # live, unlike OpenAI
    write_results(
        redis_url,
        batch["id"],
        [succeeded(batch["id"], "q1", "a1"), errored(batch["id"], "q2")],
    )
    resp = await client.get(f"/v1/batches/{batch['id']}", headers=auth(KEY_A))
    done = await resp.json()
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    # and its output file holds the answers as the SDK's own ChatCompletion objects,
    out = await client.get(f"/v1/files/{done['output_file_id']}/content", headers=auth(KEY_A))
    rows = [orjson.loads(line) for line in (await out.read()).splitlines()]
    answers = {r["custom_id"]: ChatCompletion.model_validate(r["response"]["body"]) for r in rows}
    assert {k: v.choices[0].message.content for k, v in answers.items()} == {"q0": "a0", "q1": "a1"}
    # its error file the failure, and both file objects are stable and sized right.
    err = await client.get(f"/v1/files/{done['error_file_id']}/content", headers=auth(KEY_A))
    err_bytes = await err.read()
    [failure] = [orjson.loads(line) for line in err_bytes.splitlines()]
    assert failure["custom_id"] == "q2" and failure["error"]["code"] == "invalid_request"
    meta = await client.get(f"/v1/files/{done['error_file_id']}", headers=auth(KEY_A))
    obj = await meta.json()
    assert obj["bytes"] == len(err_bytes) and obj["purpose"] == "batch_output"
    again = await (await client.get(f"/v1/batches/{done['id']}", headers=auth(KEY_A))).json()
    assert again["error_file_id"] == done["error_file_id"]
    # Nobody else can see the batch or its files.
    for path in (f"/v1/batches/{done['id']}", f"/v1/files/{done['output_file_id']}/content"):
        assert (await client.get(path, headers=auth(KEY_B))).status == 404


async def test_only_the_owner_can_cancel_and_cancelling_is_recorded(
    api: Api, redis_url: str
) -> None:
    client = await api()
    created = await new_batch(client, KEY_A, jsonl([chat_line(f"c{i}") for i in range(4)]))
    await settled(client, KEY_A, created["id"])
    resp = await client.post(f"/v1/batches/{created['id']}/cancel", headers=auth(KEY_B))
    assert resp.status == 404
    resp = await client.post(f"/v1/batches/{created['id']}/cancel", headers=auth(KEY_A))
    cancelling = await resp.json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    # Workers would now end the queued requests `cancelled`; do it as they would.
    write_results(
        redis_url,
        created["id"],
        [
            LLMResult(custom_id=f"c{i}", batch_id=created["id"], status="cancelled")
            for i in range(4)
        ],
    )
    resp = await client.get(f"/v1/batches/{created['id']}", headers=auth(KEY_A))
    cancelled = await resp.json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None


async def test_list_pages_newest_first_with_after_and_limit(api: Api) -> None:
    client = await api()
    ids = [(await new_batch(client, KEY_A, jsonl([chat_line("p")])))["id"] for _ in range(5)]
    await new_batch(client, KEY_B, jsonl([chat_line("p")]))  # another tenant's: never listed
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        query = {"limit": "2", **({"after": after} if after else {})}
        resp = await client.get("/v1/batches", params=query, headers=auth(KEY_A))
        page = await resp.json()
        pages += 1
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1] and pages == 3
    resp = await client.get("/v1/batches", params={"after": "batch_nope"}, headers=auth(KEY_A))
    assert resp.status == 400
    resp = await client.get("/v1/batches", params={"limit": "0"}, headers=auth(KEY_A))
    assert (await resp.json())["error"]["param"] == "limit"


async def test_jobs_validate_wait_and_belong_to_their_owner(api: Api, redis_url: str) -> None:
    client = await api()
    resp = await client.post(
        "/v1/jobs", json={"messages": [{"role": "robot", "content": "x"}]}, headers=auth(KEY_A)
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == "messages.0.role" and error["message"].startswith("line 1: ")
    resp = await client.post(
        "/v1/jobs", json={**chat_line("j"), "body": {"model": "m"}}, headers=auth(KEY_A)
    )
    assert (await resp.json())["error"]["param"] == "body.messages"
    # Without workers a job cannot finish: the wait times out with 202.
    resp = await client.post(
        "/v1/jobs?wait=0.2",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers=auth(KEY_A),
    )
    assert resp.status == 202
    job = await resp.json()
    assert job["status"] == "in_progress" and job["custom_id"] == job["id"]
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=auth(KEY_B))).status == 404
    write_results(redis_url, job["id"], [succeeded(job["id"], job["custom_id"], "hello")])
    resp = await client.get(f"/v1/jobs/{job['id']}?format=openai", headers=auth(KEY_A))
    done = await resp.json()
    assert done["status"] == "succeeded"
    body = ChatCompletion.model_validate(done["result"]["response"]["body"])
    assert body.choices[0].message.content == "hello"


async def test_per_key_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    client = await api(rate_per_min=3)
    statuses = [(await client.get("/v1/batches", headers=auth(KEY_A))).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = await client.get("/v1/batches", headers=auth(KEY_A))
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    # The limit is per key.
    assert (await client.get("/v1/batches", headers=auth(KEY_B))).status == 200


async def test_deep_queues_push_back_new_work_with_429(api: Api, redis_url: str) -> None:
    with Client(redis_url) as direct:
        direct.submit_many([chat_line(f"d{i}") for i in range(3)])
    client = await api(max_queue_depth=2, retry_after_s=7)
    resp = await client.post(
        "/v1/jobs", json={"messages": [{"role": "user", "content": "x"}]}, headers=auth(KEY_A)
    )
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["error"]["code"] == "queue_full"
    # Reading is never pushed back.
    assert (await client.get("/v1/batches", headers=auth(KEY_A))).status == 200


async def test_events_stream_progress_until_the_batch_is_done(api: Api, redis_url: str) -> None:
    client = await api()
    created = await new_batch(client, KEY_A, jsonl([chat_line(f"e{i}") for i in range(2)]))
    await settled(client, KEY_A, created["id"])
    resp = await client.get(
        f"/v1/batches/{created['id']}/events?interval=0.05", headers=auth(KEY_A)
    )
    assert resp.headers["Content-Type"] == "text/event-stream"
    events: list[tuple[str, dict[str, Any]]] = []
    event = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, orjson.loads(line[6:])))
            done = events[-1][1]["request_counts"]["completed"]
            if event == "progress" and done < 2:
                write_results(redis_url, created["id"], [succeeded(created["id"], f"e{done}", "")])
    assert [e for e, _ in events][-1] == "done"
    assert [b["request_counts"]["completed"] for _, b in events] == [0, 1, 2]
    assert events[-1][1]["status"] == "completed"


async def test_metrics_count_requests_by_route_template(api: Api) -> None:
    client = await api()
    await client.get("/v1/batches/batch_unknown", headers=auth(KEY_A))
    text = await (await client.get("/metrics")).text()
    assert (
        'batchyard_gateway_requests_total{method="GET",route="/v1/batches/{batch_id}",'
        'status="404"} 1.0' in text
    )
    assert "batchyard_gateway_request_seconds_bucket" in text


async def test_cancel_while_validating_and_interrupted_ingestions_end_the_batch(
    api: Api, redis_url: str
) -> None:
    client = await api()
    gw = client.server.app[GATEWAY]
    r = redis.Redis.from_url(redis_url)
    file_id = (await (await upload(client, KEY_A, jsonl([chat_line("v")]))).json())["id"]
    stored = await gw.store.get(file_id)
    assert stored is not None

    def validating(batch_id: str, lease_s: float) -> None:
        record = {"kind": "batch", "owner": "tenant-a", "phase": "validating", "created_at": 1}
        r.hset(f"batchyard:gw:batch:{batch_id}", mapping=record)
        r.zadd("batchyard:gw:ingesting", {batch_id: time.time() + lease_s})

    # A cancel that arrives during validation ends the batch there,
    validating("batch_cancelme", 60)
    resp = await client.post("/v1/batches/batch_cancelme/cancel", headers=auth(KEY_A))
    cancelled = await resp.json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    # and the ingestion that was validating stops without queueing anything.
    await gw.ingest.run("batch_cancelme", stored, 3600.0, {})
    resp = await client.get("/v1/batches/batch_cancelme", headers=auth(KEY_A))
    assert (await resp.json())["status"] == "cancelled"
    assert queued(redis_url) == 0
    # A batch whose gateway died while validating (its lease ran out) is failed by any gateway.
    validating("batch_orphan", -1)
    assert await gw.ingest.recover() == 1
    resp = await client.get("/v1/batches/batch_orphan", headers=auth(KEY_A))
    orphan = await resp.json()
    assert orphan["status"] == "failed"
    assert orphan["errors"]["data"][0]["code"] == "gateway_interrupted"
    assert r.zcard("batchyard:gw:ingesting") == 0
    r.close()


async def test_an_ingestion_ends_however_soon_its_submission_ends(
    api: Api, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-round-trip submission can end while the lease's first ZADD is being written: on
    # Python 3.11 a cancel landing there was lost (redis-py writes under asyncio.wait_for),
    # the lease renewed for ever and the ingestion waited on it past the gateway's shutdown.
    client = await api()
    gw = client.server.app[GATEWAY]
    r = redis.Redis.from_url(redis_url)
    file_id = (await (await upload(client, KEY_A, jsonl([chat_line("v")]))).json())["id"]
    stored = await gw.store.get(file_id)
    assert stored is not None
    for passes in range(16):
        # Given a validating batch whose submission ends `passes` loop passes after it starts,
        batch_id = f"batch_quick{passes}"
        record = {"kind": "batch", "owner": "tenant-a", "phase": "validating", "created_at": 1}
        r.hset(f"batchyard:gw:batch:{batch_id}", mapping=record)

        async def submit(lines: Any, *, batch_id: str, n: int = passes, **_: Any) -> SubmitReport:
            for _ in range(n):
                await asyncio.sleep(0)
            return SubmitReport(batch_id, 1, 1, 0)

        monkeypatch.setattr(gw.ingest.client, "submit_many", submit)
        # when it is ingested, then the ingestion ends (the lease renews every 15 s: a lost
        # stop shows well within the deadline), the batch submitted and its lease released.
        ingestion = asyncio.create_task(gw.ingest.run(batch_id, stored, 3600.0, {}))
        done, _ = await asyncio.wait({ingestion}, timeout=10)
        assert done, f"ingestion still running; submission ended after {passes} passes"
        assert r.hget(f"batchyard:gw:batch:{batch_id}", "phase") == b"submitted"
        assert r.zscore("batchyard:gw:ingesting", batch_id) is None
    r.close()


async def test_redis_outage_is_503_not_a_crash(api: Api, redis_server: RedisServer) -> None:
    client = await api()
    assert (await client.get("/v1/batches", headers=auth(KEY_A))).status == 200
    redis_server.stop()
    resp = await client.get("/v1/batches", headers=auth(KEY_A))
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "backend_unavailable"
    assert (await client.get("/healthz")).status == 503


async def test_sweep_removes_only_old_orphans(api: Api, tmp_path: Path) -> None:
    client = await api(small_file_kib=0)
    gw = client.server.app[GATEWAY]
    kept = (await (await upload(client, KEY_A, jsonl([chat_line("k")]))).json())["id"]
    folder = tmp_path / "files" / "batchyard"
    for name in ("file-orphan.jsonl", "file-crashed.part", "file-fresh.jsonl"):
        (folder / name).write_bytes(b"x\n")
    two_hours_ago = time.time() - 7200
    for name in ("file-orphan.jsonl", "file-crashed.part", f"{kept}.jsonl"):
        os.utime(folder / name, (two_hours_ago, two_hours_ago))
    assert await gw.store.sweep() == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(["file-fresh.jsonl", f"{kept}.jsonl"])
