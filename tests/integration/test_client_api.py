"""Client and AsyncClient against a real Redis: the same operations give the same answers.

No workers run: a worker's failure is written the way a worker writes it (`write_results.lua`
with a dead letter), so failures, retry_failed and cancel have something to act on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from producers.client import AsyncClient, Client
from producers.gmn import GMNChunkBuilder
from producers.submit import new_batch_id
from schemas.config import DEFAULT_CONFIG, parse_config
from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import ErrorInfo, LLMResult
from schemas.settings import Settings
from tests.conftest import openai_line
from workers.protocol.batch_record import new_record
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, register

pytestmark = pytest.mark.integration

CONFIG = parse_config(DEFAULT_CONFIG)
LINES: list[Any] = [
    openai_line("a", "hello"),
    openai_line("b", "world"),
    openai_line("a", "again"),  # duplicate custom_id
    b'{"custom_id": "broken", ',  # not JSON
]


def fail_b(client: Client, batch_id: str) -> None:
    """Record `b` as a worker would after its last attempt failed."""
    request = LLMRequest.model_validate(
        {"custom_id": "b", "body": {"messages": [{"role": "user", "content": "world"}]}}
    )
    job = Job(batch_id=batch_id, key="b", request=request, route=CONFIG.route(), enqueued_at=0)
    result = LLMResult(
        custom_id="b",
        batch_id=batch_id,
        status="errored",
        error=ErrorInfo(code="server_error", message="upstream 500"),
    )
    dead = DeadLetter.of(job, "errored", "server_error")
    register(client.redis, Lua.WRITE_RESULTS)(
        **write_call(client.keys, 60, [("b", result, False, dead)])
    )


def sync_story(client: Client) -> dict[str, Any]:
    report = client.submit_many(LINES, metadata={"who": "sync"})
    batch_id = report.batch_id
    fail_b(client, batch_id)
    before = client.wait(batch_id, timeout_s=0, poll_s=0)
    failures, failed = client.failures(batch_id), client.failed_requests(batch_id)
    results = [(key, r.status) for _, key, r in client.iter_results(batch_id)]
    page = client.results(batch_id, count=1)
    return {
        "report": (report.lines, report.enqueued, report.invalid),
        "counts": before.counts,
        "finished": before.finished,
        "failures": failures,
        "failed": failed,
        "results": sorted(results),
        "page": (len(page.entries), page.read),
        "retried": client.retry_failed(batch_id),
        "after_retry": sorted(k for _, k, _ in client.iter_results(batch_id)),
        "health": sorted(client.health(["mock"])),
        "cancel": client.cancel(batch_id),
        "metadata": client.batch(batch_id).metadata,
    }


async def async_story(client: AsyncClient, sync: Client) -> dict[str, Any]:
    report = await client.submit_many(LINES, metadata={"who": "sync"})
    batch_id = report.batch_id
    fail_b(sync, batch_id)
    before = await client.wait(batch_id, timeout_s=0, poll_s=0)
    failures, failed = await client.failures(batch_id), await client.failed_requests(batch_id)
    results = [(key, r.status) async for _, key, r in client.iter_results(batch_id)]
    page = await client.results(batch_id, count=1)
    return {
        "report": (report.lines, report.enqueued, report.invalid),
        "counts": before.counts,
        "finished": before.finished,
        "failures": failures,
        "failed": failed,
        "results": sorted(results),
        "page": (len(page.entries), page.read),
        "retried": await client.retry_failed(batch_id),
        "after_retry": sorted([k async for _, k, _ in client.iter_results(batch_id)]),
        "health": sorted(await client.health(["mock"])),
        "cancel": await client.cancel(batch_id),
        "metadata": (await client.batch(batch_id)).metadata,
    }


def test_both_clients_give_the_same_answers(redis_url: str) -> None:
    with Client(redis_url, config=CONFIG) as sync:
        seen = sync_story(sync)

        async def run() -> dict[str, Any]:
            async with AsyncClient(redis_url, config=CONFIG) as aclient:
                return await async_story(aclient, sync)

        also = asyncio.run(run())
    assert seen == also
    # And the answers are the right ones: two lines queued, two rejected, `b` failed,
    assert seen["report"] == (4, 2, 2)
    assert seen["failures"] == {"server_error": ["b"]}
    assert [(f.key, f.code, f.kind) for f in seen["failed"]] == [("b", "server_error", "chat")]
    assert seen["results"] == [("#line:3", "errored"), ("#line:4", "errored"), ("b", "errored")]
    assert not seen["finished"] and seen["page"] == (1, 1)
    # retried once (its result is superseded), still ours to cancel, metadata kept.
    assert seen["retried"] == 1 and seen["after_retry"] == ["#line:3", "#line:4"]
    assert seen["health"] == ["mock"] and seen["cancel"].value in ("cancelling", "cancelled")
    assert seen["metadata"] == {"who": "sync"}


def test_typed_items_go_through_the_public_seam_with_their_counts(redis_url: str) -> None:
    prompt = "A thermostat senses cold or hot rooms and heats or cools."
    lines: list[Any] = [
        {"custom_id": "p1", "prompt": prompt},
        {"custom_id": "p1", "prompt": prompt},  # duplicate custom_id
        {"custom_id": "p2", "prompt": "too short"},  # fewer than the words a prompt needs
        orjson.dumps({"custom_id": "p3", "prompt": prompt}),
    ]
    with Client(redis_url, config=CONFIG) as client:
        route = CONFIG.route()
        builder = GMNChunkBuilder(
            new_batch_id(), client.keys, CONFIG, route, None, rounds=2, options={}
        )
        report = client.submit_chunks(builder, new_record(route), lines)
        batch = client.batch(report.batch_id)
        keys = sorted(k for _, k, _ in client.iter_results(report.batch_id))
    assert (report.lines, report.enqueued, report.invalid) == (4, 2, 2)
    assert batch.counts.total == 4 and keys == ["#line:2", "#line:3"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5])
def test_every_chunking_of_a_submission_counts_the_same(redis_url: str, chunk: int) -> None:
    """One chunk or several, the last sent in line and the others while the next is built,
    both clients count the same lines, duplicates (also across chunks) and broken lines."""
    settings = Settings(redis_url=redis_url, enqueue_chunk=chunk)

    async def submit() -> tuple[int, int, int]:
        async with AsyncClient(redis_url, settings=settings, config=CONFIG) as aclient:
            report = await aclient.submit_many(LINES)
            return report.lines, report.enqueued, report.invalid

    with Client(redis_url, settings=settings, config=CONFIG) as client:
        report = client.submit_many(LINES)
        keys = sorted(k for _, k, _ in client.iter_results(report.batch_id))
        total = client.batch(report.batch_id).counts.total
    assert (report.lines, report.enqueued, report.invalid) == (4, 2, 2)
    assert keys == ["#line:3", "#line:4"] and total == 4
    assert asyncio.run(submit()) == (4, 2, 2)
