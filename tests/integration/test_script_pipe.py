"""The limiter's script pipe against a real Redis: a loop turn's calls go as one batched
EVALSHA per script, releases before admits, and a call that fails fails alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.config import EndpointConfig
from workers.protocol.keys import Keys
from workers.protocol.scripts import Lua, register
from workers.ratelimit import Limiter, MustWait
from workers.results import ScriptPipe

pytestmark = pytest.mark.integration
SCOPE = Keys("t").limit("ep")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def limiter_pipe(client: aioredis.Redis) -> tuple[ScriptPipe, tuple[str, ...], float]:
    """The limiter's pipe, the keys of one scope and a now (ms) for its calls."""
    return ScriptPipe(client, (Lua.LIMIT_RELEASE, Lua.LIMIT_ADMIT)), SCOPE, time.time() * 1000


def words(*args: object) -> str:
    """A call's arguments as the pipe takes them: each followed by a space."""
    return "".join(f"{a} " for a in args)


def release(now: float, lease: str, *, headers: tuple[int, ...] = (-1,) * 6) -> str:
    """A one-scope release (max concurrency 1) of an answer with these limit headers."""
    return words(now, lease, 0, 0, 0, 1, 0, 10, *headers, now, 0, 0, 1)


async def test_releases_of_a_turn_run_before_its_admits_and_a_failing_call_fails_alone(
    client: aioredis.Redis,
) -> None:
    pipe, keys, now = limiter_pipe(client)

    async def admit(lease: str, conc: object = 1) -> object:
        # one scope: max concurrency 1, no rpm/tpm, no gate
        return await pipe.call(Lua.LIMIT_ADMIT, keys, words(now, lease, 60_000, 10, 0, 0, 0, conc))

    # Both scripts loaded first: a script Redis does not know yet runs after the others.
    assert await pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "none")) == 1
    assert await admit("a") == [1, b"0", 0]
    b, released, bad, c = await asyncio.gather(
        admit("b"),  # asked before the release, in the same turn: runs after it
        pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "a")),
        admit("bad", conc="x"),  # Lua compares nil with a number: this call's error
        admit("c"),  # the lease is b's now
        return_exceptions=True,
    )
    assert b == [1, b"0", 0]
    assert released == 1
    assert isinstance(bad, ResponseError)
    assert isinstance(c, list) and c[0] == 0 and int(c[1]) > 0
    assert await client.zrange(SCOPE.leases, 0, -1) == [b"b"]


async def test_a_turns_admits_set_each_keys_ttl_once_and_the_last_asked_wins(
    client: aioredis.Redis,
) -> None:
    pipe, keys, now = limiter_pipe(client)

    def admit(lease: str, ttl_ms: int) -> object:
        return pipe.call(Lua.LIMIT_ADMIT, keys, words(now, lease, ttl_ms, 10, 0, 0, 0, 5))

    assert await admit("first", 60_000) == [1, b"0", 0]  # loads the script
    assert 60_000 < await client.pttl(SCOPE.leases) <= 120_000
    # one batched call: the leases' TTL is set once, as its last admission asked
    assert await asyncio.gather(admit("a", 600_000), admit("b", 20_000)) == [[1, b"0", 0]] * 2
    assert 20_000 < await client.pttl(SCOPE.leases) <= 40_000
    assert await client.zcard(SCOPE.leases) == 3


async def test_calls_of_a_turn_for_other_scopes_get_their_own_keys_and_empty_words_stay(
    client: aioredis.Redis,
) -> None:
    pipe, keys, now = limiter_pipe(client)
    other = Keys("t").limit("other")
    assert await pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "none")) == 1  # loads it

    async def admit(scope: tuple[str, ...], lease: str) -> int:
        ok, _, _ = await pipe.call(
            Lua.LIMIT_ADMIT, scope, words(now, lease, 60_000, 10, 0, 0, 0, 1)
        )
        return int(ok)

    # One turn, two scopes interleaved (their keys go once each): each admits its own first
    # lease and refuses the second.
    replies = await asyncio.gather(
        admit(keys, "a"), admit(other, "x"), admit(keys, "b"), admit(other, "y")
    )
    assert replies == [1, 1, 0, 0]
    assert await client.zrange(SCOPE.leases, 0, -1) == [b"a"]
    assert await client.zrange(other.leases, 0, -1) == [b"x"]
    # A release without a lease (an empty word: the provider announced limits to a process
    # that holds none) still learns the headers that follow it: 5 of 60 requests left.
    learned = release(now, "", headers=(60, 5, 1000, -1, -1, -1))
    assert await pipe.call(Lua.LIMIT_RELEASE, keys, learned) == 1
    assert await client.hmget(SCOPE.state, "lr_lim", "lr_lvl") == [b"60", b"5"]


async def test_in_one_turn_after_a_pause_one_request_probes_and_the_rest_wait(
    client: aioredis.Redis,
) -> None:
    pipe, keys, now = limiter_pipe(client)
    assert await pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "none")) == 1  # loads it
    # Given a pause that ended a moment ago,
    await register(client, Lua.LIMIT_PAUSE)(keys=[SCOPE.pause], args=[now - 1, now - 1_001])

    async def admit(lease: str) -> tuple[int, int]:
        ok, _, probe = await pipe.call(
            Lua.LIMIT_ADMIT, keys, words(now, lease, 60_000, 10, 0, 0, 0, 0)
        )
        return int(ok), int(probe)

    # when a turn's admits run in one batched call, the first probes and the others see its
    # probe (the pause as it wrote it, not as the batch first read it) and wait;
    assert await asyncio.gather(admit("p"), admit("q"), admit("r")) == [(1, 1), (0, 0), (0, 0)]
    # its answer ends the pause, for the releases after it in the same turn too.
    assert await asyncio.gather(
        pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "p")),
        pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "q")),
    ) == [1, 1]
    assert await client.get(SCOPE.pause) is None
    assert await admit("s") == (1, 0)


async def test_a_posted_call_goes_before_the_admits_asked_after_it_and_drain_waits_for_it(
    client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    pipe, keys, now = limiter_pipe(client)

    def admit(lease: str) -> object:  # one scope, max concurrency 1
        return pipe.call(Lua.LIMIT_ADMIT, keys, words(now, lease, 60_000, 10, 0, 0, 0, 1))

    assert await pipe.call(Lua.LIMIT_RELEASE, keys, release(now, "none")) == 1  # loads it
    assert await admit("a") == [1, b"0", 0]
    # a's release, its reply unread: the next admission finds the lease free
    pipe.post(Lua.LIMIT_RELEASE, keys, release(now, "a"))
    assert await admit("b") == [1, b"0", 0]
    # a posted call that fails is logged; drain returns once it has been answered
    pipe.post(Lua.LIMIT_RELEASE, keys, words(now, "a", *[0] * 12, now, 0, 0, "x"))
    pipe.post(Lua.LIMIT_RELEASE, keys, release(now, "b"))
    await pipe.drain()
    assert await client.zcard(SCOPE.leases) == 0
    assert "ScriptPipe: a posted Redis call failed" in caplog.text


async def test_a_release_does_not_wait_for_redis_and_aclose_waits_for_the_releases(
    client: aioredis.Redis,
) -> None:
    cfg = EndpointConfig(provider="openai", base_url="http://127.0.0.1:9/v1", max_concurrency=2)
    limiter = Limiter(client, "t", "ep", cfg)
    leases = [await limiter.acquire("m", 10, 60) for _ in range(2)]
    assert await client.zcard(SCOPE.leases) == 2
    for lease in leases:
        await limiter.release(lease, 12, (0, 0))
    await limiter.aclose()
    assert await client.zcard(SCOPE.leases) == 0


async def test_a_release_wakes_a_request_waiting_for_its_slot(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request refused for a slot is admitted when a release in its process frees one, not
    at the end of the scripts' 50 ms poll: with every short timer held back (the poll's
    included), only the release can wake it."""
    cfg = EndpointConfig(provider="openai", base_url="http://127.0.0.1:9/v1", max_concurrency=1)
    limiter = Limiter(client, "t", "ep", cfg)
    first = await limiter.acquire("m", 10, 60)
    loop = asyncio.get_running_loop()
    call_later = loop.call_later
    held = asyncio.Event()

    def no_short_timers(delay: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if 0 < delay <= 1.0:
            held.set()
            delay = 3600.0
        return call_later(delay, *args, **kwargs)

    monkeypatch.setattr(loop, "call_later", no_short_timers)
    second = asyncio.ensure_future(limiter.acquire("m", 10, 60))
    await asyncio.wait_for(held.wait(), 10)  # refused: waiting for its slot
    assert not second.done()
    await limiter.release(first, 12, (0, 0))
    lease = await asyncio.wait_for(second, 10)
    assert lease.id and lease.id != first.id
    await limiter.release(lease, 12, (0, 0))
    await limiter.aclose()
    assert await client.zcard(SCOPE.leases) == 0


async def _waiting_in(line: Any, what: str) -> None:
    for _ in range(500):  # until the request is parked in `line`, at most ~5 s
        if line:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no request waited {what}")


async def test_a_request_waiting_out_a_pause_goes_back_unsent_when_the_worker_stops(
    client: aioredis.Redis,
) -> None:
    # Given an endpoint paused for 30 s by a 429, and a request allowed to wait that out,
    cfg = EndpointConfig(provider="openai", base_url="http://127.0.0.1:9/v1", max_inline_wait_s=60)
    limiter = Limiter(client, "t", "ep", cfg)
    await limiter.pause(30.0)
    waiting = asyncio.ensure_future(limiter.acquire("m", 10, 60))
    await _waiting_in(limiter._napping, "for the pause")
    # when the worker stops, it goes back to its queue now (it held the drain, and a
    # Ctrl-C, until the pause ended or the grace ran out),
    limiter.drain()
    with pytest.raises(MustWait):
        await asyncio.wait_for(waiting, 5)
    # and a request that reaches the limiter while it stops does not wait either.
    with pytest.raises(MustWait):
        await asyncio.wait_for(limiter.acquire("m", 10, 60), 5)
    await limiter.aclose()


async def test_a_request_waiting_for_a_slot_goes_back_unsent_when_the_worker_stops(
    client: aioredis.Redis,
) -> None:
    cfg = EndpointConfig(
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        max_concurrency=1,
        max_inline_wait_s=60,
    )
    limiter = Limiter(client, "t", "ep", cfg)
    first = await limiter.acquire("m", 10, 60)
    waiting = asyncio.ensure_future(limiter.acquire("m", 10, 60))
    await _waiting_in(limiter._waiting, "for a slot")
    limiter.drain()
    with pytest.raises(MustWait):
        await asyncio.wait_for(waiting, 5)
    # the call admitted before goes on, and gives its slot back as usual
    await limiter.release(first, 12, (0, 0))
    await limiter.aclose()
    assert await client.zcard(SCOPE.leases) == 0
