"""cancel_and_wait: a background task cancelled at shutdown ends, even where Python 3.11's
asyncio.wait_for (under every redis-py command write) swallows the cancel."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis

from workers.background import cancel_and_wait
from workers.redis_server import RedisServer


async def deaf_to_one_cancel(log: list[str]) -> None:
    """Drops the first cancel, as wait_for does when it lands as the write completes."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        log.append("first cancel swallowed")
    await asyncio.sleep(3600)


def test_a_task_that_lost_the_first_cancel_still_ends() -> None:
    async def main() -> None:
        log: list[str] = []
        task = asyncio.create_task(deaf_to_one_cancel(log))
        await asyncio.sleep(0)
        assert await cancel_and_wait(task, timeout_s=10)
        assert task.cancelled() and log == ["first cancel swallowed"]

    asyncio.run(main())


def test_a_task_that_never_ends_is_given_up_after_the_timeout() -> None:
    async def main() -> None:
        deaf = asyncio.Event()
        deaf.set()

        async def stubborn() -> None:
            while deaf.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        assert not await cancel_and_wait(task, timeout_s=0.2)
        assert not task.done()
        deaf.clear()  # now it listens
        assert await cancel_and_wait(task, timeout_s=10)

    asyncio.run(main())


def test_an_error_the_task_ended_with_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    async def main() -> None:
        task = asyncio.create_task(fails())
        await asyncio.wait({task})
        with pytest.raises(ValueError, match="boom"):
            await cancel_and_wait(task)

    asyncio.run(main())


def test_every_cancel_of_a_redis_pubsub_listener_ends_it(redis_server: RedisServer) -> None:
    """The worker's cancel listener, cancelled 0-7 loop passes after it starts: one plain
    cancel kept a quarter of them running (redis-py 8, Python 3.11)."""

    async def listen(r: aioredis.Redis) -> None:
        while True:
            async with r.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe("cancels")
                async for _ in pubsub.listen():
                    pass

    async def main() -> list[bool]:
        r = aioredis.Redis.from_url(redis_server.url)
        ended = []
        try:
            for i in range(64):
                task = asyncio.create_task(listen(r))
                for _ in range(i % 8):
                    await asyncio.sleep(0)
                ended.append(await cancel_and_wait(task, timeout_s=10))
        finally:
            await r.aclose()
        return ended

    assert asyncio.run(main()) == [True] * 64
