"""Bounds sharing one loop timer per length (`workers.deadlines`) behave as `asyncio.timeout`."""

from __future__ import annotations

import asyncio

import pytest

from workers.deadlines import _queues, deadline


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_block_that_outlasts_its_bound_raises_timeout_error_and_nothing_after() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(0.01):
            await forever()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # no cancel left pending either


async def test_bounds_of_one_length_arm_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    timers = loop._scheduled  # type: ignore[attr-defined]
    before = len(timers)
    entered, release = asyncio.Semaphore(0), asyncio.Event()

    async def call() -> str:
        async with deadline(60.0):
            entered.release()
            await release.wait()
        return "answer"

    calls = [asyncio.ensure_future(call()) for _ in range(100)]
    for _ in calls:
        await entered.acquire()
    assert len(timers) == before + 1  # asyncio.timeout: one each, 100
    release.set()
    assert await asyncio.gather(*calls) == ["answer"] * 100


async def test_a_call_that_ended_in_time_is_not_cancelled_when_its_bound_would_have_ended() -> None:
    async with deadline(0.02):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the bound: the task goes on


async def test_bounds_expire_in_order_each_at_its_own_deadline() -> None:
    loop = asyncio.get_running_loop()
    ended: list[str] = []
    first_in = asyncio.Event()

    async def call(name: str) -> None:
        bound = deadline(0.05)
        try:
            async with bound:
                first_in.set()
                await forever()
        except TimeoutError:
            assert loop.time() >= bound.when, "not before its own deadline"
            ended.append(name)

    first = asyncio.ensure_future(call("first"))
    await first_in.wait()
    await asyncio.sleep(0.02)  # the second starts later, so its bound ends later
    await asyncio.gather(first, call("second"))
    assert ended == ["first", "second"]


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    entered = asyncio.Event()

    async def call() -> None:
        async with deadline(60.0):
            entered.set()
            await forever()

    task = asyncio.ensure_future(call())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_call_hanging_at_the_head_does_not_keep_the_ended_ones_behind_it() -> None:
    hung = asyncio.Event()

    async def hang() -> None:
        async with deadline(3600.0):
            hung.set()
            await forever()

    head = asyncio.ensure_future(hang())
    await hung.wait()
    queue = _queues[3600.0]
    # Given one call that never answers, 10,000 later calls of the same length that end
    for _ in range(10_000):
        async with deadline(3600.0):
            await asyncio.sleep(0)
    # are not kept queued behind it until its bound runs out (an hour, here),
    assert len(queue) <= 2 + 64
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    # and a call after that is bounded as before.
    with pytest.raises(TimeoutError):
        async with deadline(0.01):
            await forever()


async def test_a_plain_with_bounds_its_block_as_async_with_does() -> None:
    with pytest.raises(TimeoutError), deadline(0.01):
        await forever()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    with deadline(60.0):
        await asyncio.sleep(0)
