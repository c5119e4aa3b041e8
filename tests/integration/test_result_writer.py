"""The result writer against a real Redis: results written together are stored once each,
also when Redis has forgotten the script (first use, restart), and a failed call fails
every waiter."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.result import LLMResult
from workers.protocol.keys import Keys
from workers.results import ResultWriter

pytestmark = pytest.mark.integration
KEYS = Keys("t")


def result(key: str) -> LLMResult:
    return LLMResult(custom_id=key, batch_id="b1", status="succeeded")


async def test_writes_survive_a_script_flush_and_a_failed_call_fails_each_waiter(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        writer = ResultWriter(client, KEYS, 60)
        # Unknown to Redis at first: refused with NOSCRIPT, loaded, run once.
        written = await asyncio.gather(*(writer.write(k, result(k)) for k in "aba"))
        assert sorted(written) == [False, True, True]
        await client.script_flush()  # as after a restart
        assert await asyncio.gather(
            writer.write("c", result("c")), writer.write("a", result("a"))
        ) == [
            True,
            False,
        ]
        assert await client.xlen(KEYS.stream("b1")) == 3
        assert await client.hget(KEYS.batch("b1"), "completed") == b"3"
        await client.set(KEYS.done("b1"), "not a hash")
        failed = await asyncio.gather(
            writer.write("d", result("d")), writer.write("e", result("e")), return_exceptions=True
        )
        assert all(isinstance(f, ResponseError) for f in failed)
    finally:
        await client.aclose()
