"""A worker process's share of adaptive concurrency (`limit_reserve.lua`, `workers.share`):
granted only where the scope is plain adaptive concurrency with room for what every holder
wants, held as leases every admission counts, fed back into adaptive concurrency, and given
back when idle."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from schemas.config import EndpointConfig
from tests.integration.test_limit_groups import run, scopes
from tests.unit.test_fake_server_limits import until
from workers import share as share_module
from workers.outcomes import NOTHING_OBSERVED
from workers.protocol.keys import Keys
from workers.protocol.scripts import Lua
from workers.ratelimit import Lease, Limiter

pytestmark = pytest.mark.integration

PLAIN = "0 0 0 0 0 0 "
TTL = 60_000


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def reserve(
    r: redis.Redis,
    keys: tuple[str, ...],
    *,
    want: int,
    keep: int = 0,
    held: int = 0,
    oks: int = 0,
    refused: str = "-",
    holder: str = "p1",
    now: int = 1_000_000,
    limits: str = PLAIN,
) -> list[int]:
    words = f"{now} {holder} {want} {keep} {held} {TTL} {oks} {refused} {limits}"
    (reply,) = run(r, Lua.LIMIT_RESERVE, keys, [words])
    assert isinstance(reply, list)
    return [int(x) for x in reply]


def members(r: redis.Redis, keys: tuple[str, ...], holder: str = "p1") -> list[bytes]:
    return sorted(m for m in r.zrange(keys[5], 0, -1) if m.startswith(holder.encode() + b"#"))


def plain(r: redis.Redis, keys: tuple[str, ...], aimd: int = 100) -> None:
    """The first answer had no limit headers: adaptive concurrency at `aimd` in flight."""
    r.hset(keys[4], mapping={"nohdr": 1, "aimd": aimd})


def test_a_plain_scope_grants_what_the_process_wants_as_leases_every_admission_counts(
    r: redis.Redis,
) -> None:
    keys = scopes("plain")
    plain(r, keys)
    assert reserve(r, keys, want=7) == [7, 100, 1]
    assert members(r, keys) == sorted(f"p1#{i}".encode() for i in range(1, 8))
    assert {s for _, s in r.zrange(keys[5], 0, -1, withscores=True)} == {1_000_000 + TTL}
    # and an admission of another process sees them: 93 of 100 left
    r.hset(keys[4], "aimd", 8)
    admit = f"1000000 other 60000 1 1 {PLAIN}"
    (reply,) = run(r, Lua.LIMIT_ADMIT, keys, [admit])
    assert reply == [1, b"0", 0]
    (reply,) = run(r, Lua.LIMIT_ADMIT, keys, [admit.replace("other", "third")])
    assert reply[0] == 0  # 7 + 1 of 8 in use


@pytest.mark.parametrize(
    "why",
    ["first answer not seen", "limits learned", "pause", "configured concurrency", "rpm"],
)
def test_no_share_where_the_scope_is_not_plain_adaptive_concurrency(
    r: redis.Redis, why: str
) -> None:
    keys, limits = scopes(why.replace(" ", "-")), PLAIN
    if why != "first answer not seen":
        plain(r, keys)
    if why == "limits learned":
        r.hset(keys[4], mapping={"lr_lim": 500, "lr_rate": 1, "lr_lvl": 500, "lr_at": 1})
    elif why == "pause":
        r.set(keys[2], "2000000 1000 0")
    elif why == "configured concurrency":
        limits = "0 0 4 0 0 0 "
    elif why == "rpm":
        limits = "0 0 0 60 0 0 "
    assert reserve(r, keys, want=5, limits=limits)[::2] == [0, 0]
    assert members(r, keys) == []
    assert r.hget(keys[4], "h:p1") is None


def test_no_share_without_room_for_every_holder_s_want(r: redis.Redis) -> None:
    keys = scopes("room")
    plain(r, keys)  # 100 in flight
    r.hset(keys[4], "h:p2", f"{1_000_000 + 1000} 60")  # another process wants 60
    assert reserve(r, keys, want=50) == [0, 100, 1]  # 110 > 100: one by one, still plain
    assert reserve(r, keys, want=40) == [40, 100, 1]
    # a holder not heard of since its field expired no longer counts, and goes
    r.hset(keys[4], "h:p2", f"{1_000_000 - 1} 60")
    assert reserve(r, keys, want=50, held=40) == [50, 100, 1]
    assert r.hget(keys[4], "h:p2") is None
    # leases out (another process's requests) leave less room than the wants say
    r.zadd(keys[5], {f"req{i}": 2_000_000 for i in range(60)})
    assert reserve(r, keys, want=45, held=50) == [0, 100, 1]  # 60 out + 45 > 100
    assert len(members(r, keys)) == 0


def test_the_answers_feed_adaptive_concurrency_as_their_releases_would(r: redis.Redis) -> None:
    keys = scopes("aimd")
    plain(r, keys, aimd=10)
    # before the first refusal: +1 per clean answer (slow start)
    assert reserve(r, keys, want=5, oks=6)[1] == 16
    # a refusal halves it, once per congestion event: one admitted before the cut does not
    assert reserve(r, keys, want=5, held=5, refused="999000", now=1_000_100)[1] == 8
    assert r.hget(keys[4], "aimd_cut_at") == b"1000100"
    assert reserve(r, keys, want=5, held=5, refused="1000050", now=1_000_200)[1] == 8
    # after it, a clean answer adds 1/limit, and a later refusal cuts by 0.8
    assert float(r.hget(keys[4], "aimd") or 0) == 8
    reserve(r, keys, want=5, held=5, oks=8, now=1_000_300)
    assert 8.9 < float(r.hget(keys[4], "aimd") or 0) < 9.1
    assert reserve(r, keys, want=5, held=5, refused="1000250,1000260", now=1_000_400)[1] == 7


def test_a_smaller_share_keeps_the_leases_of_calls_in_flight_and_drops_the_rest(
    r: redis.Redis,
) -> None:
    keys = scopes("shrink")
    plain(r, keys)
    reserve(r, keys, want=10)
    # the limit fell below what is out: nothing granted, the 3 calls in flight keep theirs
    r.hset(keys[4], "aimd", 2)
    assert reserve(r, keys, want=10, keep=3, held=10)[0] == 0
    assert members(r, keys) == [b"p1#1", b"p1#2", b"p1#3"]
    assert r.hget(keys[4], "h:p1") is not None
    # nothing in flight and nothing wanted: the share is gone
    assert reserve(r, keys, want=0, keep=0, held=3)[0] == 0
    assert members(r, keys) == [] and r.hget(keys[4], "h:p1") is None


# --- a worker process's limiter ---------------------------------------------------------


def limiter(redis_url: str) -> tuple[Limiter, aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    cfg = EndpointConfig(provider="openai", base_url="http://x", api_key="k", model="m")
    return Limiter(client, "t", "busy", cfg, learning=True), client


async def calls(lim: Limiter, tasks: int, each: int) -> list[Lease]:
    """`tasks` concurrent callers, each admitted `each` times, answered without headers."""
    leases: list[Lease] = []

    async def caller() -> None:
        for _ in range(each):
            lease = await lim.acquire("m", 10, 30)
            leases.append(lease)
            await asyncio.sleep(0.001)
            await lim.release(lease, 5, (0, 0), NOTHING_OBSERVED)

    await asyncio.gather(*(caller() for _ in range(tasks)))
    return leases


def script_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_busy_process_admits_in_its_share_then_gives_it_back_when_idle(
    redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(share_module, "IDLE_S", 0.3)
    scope = Keys("t").limit("busy", "m")

    async def main() -> tuple[list[Lease], int, list[bytes]]:
        lim, client = limiter(redis_url)
        before = script_calls(r)
        leases = await calls(lim, 40, 50)
        used = script_calls(r) - before
        held = r.zrange(scope.leases, 0, -1)
        # idle: the share is given back (its leases, and its want in the state)
        await until(lambda: not r.zcard(scope.leases), 10)
        await lim.aclose()
        await client.aclose()
        return leases, used, held

    leases, used, held = asyncio.run(main())
    # then most of 2,000 requests were admitted in the share, with far fewer script calls
    # (each a loop turn's admits or releases, or a renewal) than requests,
    in_share = sum(lease.share is not None for lease in leases)
    assert in_share > 0.9 * len(leases), in_share
    assert used < 0.25 * len(leases), used
    # the share was leases of this process, 40 of them (what its callers wanted at once),
    assert len(held) == 40 and all(b"#" in m for m in held), held
    # and once idle nothing of it is left in Redis.
    assert r.zcard(scope.leases) == 0
    assert not [f for f in r.hkeys(scope.state) if f.startswith(b"h:")]


def test_a_refusal_under_a_share_cuts_the_shared_limit_without_waiting_for_a_renewal(
    redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(share_module, "SYNC_S", 30.0)  # no renewal during the test
    state_key = Keys("t").limit("busy", "m").state

    async def main() -> tuple[bytes | None, bytes | None]:
        lim, client = limiter(redis_url)
        await calls(lim, 20, 20)
        lease = await lim.acquire("m", 10, 30)
        assert lease.share is not None
        before = r.hget(state_key, "aimd_cut_at")
        await lim.release(lease, None, (0, 0), answered=False)
        await until(lambda: r.hget(state_key, "aimd_cut_at") is not None, 10)
        after = r.hget(state_key, "aimd_cut_at")
        await lim.aclose()
        await client.aclose()
        return before, after

    before, after = asyncio.run(main())
    # no refusal before, then the cut well before the next renewal (30 s away)
    assert before is None and after is not None


def test_a_pause_stops_admissions_in_the_share(redis_url: str) -> None:
    async def main() -> tuple[Lease, Lease]:
        lim, client = limiter(redis_url)
        await calls(lim, 20, 20)
        before = await lim.acquire("m", 10, 30)
        await lim.release(before, 5, (0, 0))
        await lim.pause(0.2)  # a 429 said wait
        after = await lim.acquire("m", 10, 30)
        await lim.release(after, 5, (0, 0))
        await lim.aclose()
        await client.aclose()
        return before, after

    before, after = asyncio.run(main())
    assert before.share is not None
    # the request after the pause waited for it through the scripts, as the probe
    assert after.share is None and after.probe
