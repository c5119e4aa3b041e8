"""The pre-call result check against a real Redis: concurrent checks of several batches go
out together and each answers for its own (batch, key)."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from workers.protocol.keys import Keys
from workers.results import ResultCheck

pytestmark = pytest.mark.integration
KEYS = Keys("t")


def test_checks_of_several_batches_answer_per_key(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.hset(KEYS.done("b1"), "a", "1-0")  # a stored result: its stream id
    sync.hset(KEYS.done("b1"), "b", "")  # a result being written (hsetnx before the id)
    sync.hset(KEYS.done("b2"), "c", "2-0")
    sync.close()
    asked = [("b1", "a"), ("b2", "a"), ("b1", "b"), ("b2", "c"), ("b1", "c"), ("b3", "a")]

    async def check() -> list[bool]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            checks = ResultCheck(client, KEYS)
            return list(await asyncio.gather(*(checks.has(b, k) for b, k in asked)))
        finally:
            await client.aclose()

    assert asyncio.run(check()) == [True, False, True, True, False, False]
