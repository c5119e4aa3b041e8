"""The pre-call result check against a real Redis: concurrent checks of several batches go
out together and each answers for its own (batch, key)."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from workers.batch_watch import BatchWatch
from workers.protocol.batch_record import BatchState
from workers.protocol.keys import Keys
from workers.results import FetchCheck, ResultCheck

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


def job(batch_id: str, key: str) -> dict[str, object]:
    """A fetched message's first argument: a job."""
    return {"batch_id": batch_id, "key": key, "request": {}}


def test_a_fetch_check_remembers_each_key_without_a_result_once(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.hset(KEYS.done("b1"), "a", "1-0")
    sync.hset(KEYS.done("b1"), "b", "")
    checks = FetchCheck(sync, KEYS)
    # Given a fetch of stored, unstored and unreadable jobs,
    fetched = [job("b1", "a"), job("b1", "b"), job("b1", "c"), job("b2", "a")]
    checks.fetched([*fetched, None, "not a job", {"key": "a"}, {"batch_id": [], "key": "a"}])
    # only the keys without a result are absent, each once (a second delivery checks again),
    assert [checks.absent(b, k) for b, k in [("b1", "a"), ("b1", "b")]] == [False, False]
    assert [checks.absent(b, k) for b, k in [("b1", "c"), ("b2", "a")]] == [True, True]
    assert not checks.absent("b1", "c") and not checks.absent("b2", "a")
    # and a Redis that cannot answer leaves every key to the executor's own check.
    sync.close()
    down = FetchCheck(redis.Redis(port=1, socket_connect_timeout=0.2), KEYS)
    down.fetched([job("b1", "c")])
    assert not down.absent("b1", "c")


def test_a_fetch_reads_the_state_of_each_batch_its_watch_holds_no_fresh_state_of(
    redis_url: str,
) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.hset(KEYS.batch("b1"), mapping={"status": "in_progress", "budget_usd": "2.5"})
    sync.hset(KEYS.batch("b2"), mapping={"status": "cancelling"})
    checks = FetchCheck(sync, KEYS)
    watch = BatchWatch(aioredis.Redis.from_url(redis_url), KEYS, poll_s=60.0)
    checks.watch = watch
    # Given a fetch of two batches' jobs, the watch holds both states after it: their first
    # calls read nothing before they are sent (or stopped, for the cancelled one),
    checks.fetched([job("b1", "a"), job("b2", "a"), job("b1", "b")])
    assert watch.fresh("b1") == BatchState("in_progress", 0.0, 2.5)
    assert watch.cancelled("b2")
    # and a state held fresh is not read again with the next fetch.
    sync.hset(KEYS.batch("b1"), "status", "cancelling")
    checks.fetched([job("b1", "c")])
    assert watch.fresh("b1") == BatchState("in_progress", 0.0, 2.5)
    sync.close()
