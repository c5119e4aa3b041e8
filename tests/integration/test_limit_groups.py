"""A batched call's run of limiter calls with the same keys, decided together
(lib/admit_group, lib/release_group): the replies and the state left are those of the same
calls one by one, with each scope read once per run."""

from __future__ import annotations

import pytest
import redis

from workers.protocol.keys import LimitKeys
from workers.protocol.scripts import Lua, batch_args, batched

pytestmark = pytest.mark.integration


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def scopes(name: str) -> tuple[str, ...]:
    """An endpoint's scope, then its model's, as a worker sends them."""
    return (*LimitKeys.of(f"t:rl:{name}"), *LimitKeys.of(f"t:rl:{name}:model:m"))


def run(r: redis.Redis, script: Lua, keys: tuple[str, ...], calls: list[str]) -> list[object]:
    """`calls` (argument words) in one batched call: one run of calls with the same keys."""
    call = batch_args([(keys, words) for words in calls])
    replies: list[object] = r.eval(batched(script), len(call["keys"]), *call["keys"], *call["args"])
    return replies


def state(r: redis.Redis, keys: tuple[str, ...]) -> list[object]:
    """What the limiter keeps of both scopes: hashes, leases with their scores, pauses."""
    out: list[object] = []
    for i in range(0, len(keys), 4):
        state_key, leases, pause, _ = keys[i : i + 4]
        out += [r.hgetall(state_key), r.zrange(leases, 0, -1, withscores=True), r.get(pause)]
    return out


def zadds(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_zadd", {}).get("calls", 0))


@pytest.mark.parametrize("endpoint_conc", [0, 3])
def test_a_run_of_admits_and_releases_leaves_what_the_calls_one_by_one_leave(
    r: redis.Redis, endpoint_conc: int
) -> None:
    limits = f"0 0 {endpoint_conc} 0 0 0 "
    grouped, single = scopes("g"), scopes("s")
    for keys in (grouped, single):
        # the first answer had no limit headers: adaptive concurrency at 5 in flight
        r.hset(keys[4], mapping={"nohdr": 1, "aimd": 5})
        r.zadd(keys[5], {"expired": 500, "old": 10**9})  # one dead worker's, one live

    def admit(now: float, lease: str) -> str:
        return f"{now} {lease} 60000 8 1 {limits}"

    def release(now: float, lease: str, answered: int, admitted: float) -> str:
        return f"{now} {lease} 3 0 0 {answered} 0 8 {'-1 ' * 6}{admitted} {limits}"

    admits = [admit(1000 + i * 0.25, f"a{i}") for i in range(8)]
    before = zadds(r)
    together = run(r, Lua.LIMIT_ADMIT, grouped, admits)
    assert zadds(r) - before == (2 if endpoint_conc else 1)  # one per scope holding leases
    assert together == [run(r, Lua.LIMIT_ADMIT, single, [words])[0] for words in admits]
    assert state(r, grouped)[1:] == state(r, single)[1:]
    # the endpoint's cap, else adaptive concurrency's 5 less the live lease
    in_flight = 3 if endpoint_conc else 4
    assert [int(ok) for ok, _, _ in together] == [1] * in_flight + [0] * (8 - in_flight)  # type: ignore[misc]

    # answers: clean, a refusal (a cut), a refusal of a request sent before it (no news),
    # clean again, and a release without a lease (empty word)
    releases = [
        release(2000, "a0", 1, 1000),
        release(2001, "a1", 0, 1000.25),
        release(2002, "a2", 0, 1000.5),
        release(2003, "old", 1, 900),
        release(2004, "", 1, 0),
    ]
    assert run(r, Lua.LIMIT_RELEASE, grouped, releases) == [1] * 5
    for words in releases:
        assert run(r, Lua.LIMIT_RELEASE, single, [words]) == [1]
    assert state(r, grouped)[1:] == state(r, single)[1:]
    hashes = r.hgetall(grouped[4]), r.hgetall(single[4])
    assert hashes[0] == hashes[1] and hashes[0][b"aimd_cut_at"] == b"2001"


def test_a_run_the_group_cannot_decide_runs_call_by_call(r: redis.Redis) -> None:
    # No answer yet (the first-answer gate): one request goes, the others wait for it.
    keys = scopes("gate")
    admits = [f"{1000 + i} l{i} 60000 8 1 0 0 0 0 0 0 " for i in range(3)]
    replies = run(r, Lua.LIMIT_ADMIT, keys, admits)
    assert [int(ok) for ok, _, _ in replies] == [1, 0, 0]  # type: ignore[misc]
    assert r.zcard(keys[5]) == 0 and r.hget(keys[4], "first_until") == b"61000"


def test_calls_that_differ_where_a_group_needs_them_equal_leave_what_one_by_one_leaves(
    r: redis.Redis,
) -> None:
    # A group reads each call's words with one match: calls whose ttls differ, and releases
    # whose answers carried limit headers or announced limits, must still come out as the
    # calls one by one would leave them.
    grouped, single = scopes("mix"), scopes("one")
    for keys in (grouped, single):
        r.hset(keys[4], mapping={"nohdr": 1, "aimd": 50})
    admits = [f"{1000 + i}.5 m{i} {60000 + (i % 2) * 5000} 8 1 0 0 0 0 0 0 " for i in range(6)]
    assert run(r, Lua.LIMIT_ADMIT, grouped, admits) == [
        run(r, Lua.LIMIT_ADMIT, single, [words])[0] for words in admits
    ]
    nothing = "-1 " * 6

    def release(now: int, lease: str, news: str, heard: str) -> str:
        return f"{now} {lease} 3 {news}1 0 8 {heard}{now - 10} 0 0 0 0 0 0 "

    releases = [
        release(2000, "m0", "0 0 ", nothing),
        release(2001, "m1", "0 0 ", "100 99 60000 -1 -1 -1 "),  # limit headers
        release(2002, "m2", "60 0 ", nothing),  # an announced limit
        release(2003, "m3", "0 0 ", nothing),
    ]
    assert run(r, Lua.LIMIT_RELEASE, grouped, releases) == [1] * 4
    for words in releases:
        assert run(r, Lua.LIMIT_RELEASE, single, [words]) == [1]
    assert state(r, grouped)[1:] == state(r, single)[1:]
    for keys in (grouped, single):  # the last admission's ttl, doubled
        assert 125_000 < r.pttl(keys[5]) <= 130_000


def calls_of(r: redis.Redis, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_runs_against_learned_buckets_leave_what_the_calls_one_by_one_leave(
    r: redis.Redis,
) -> None:
    # Given a model scope whose buckets an answer described (20 requests, 1,000 tokens;
    # OpenAI's headers), the endpoint's scope limited by nothing,
    grouped, single = scopes("lg"), scopes("ls")
    limits = "0 0 0 0 0 0 "
    for keys in (grouped, single):
        first = f"1000 x 0 0 0 1 0 0 20 20 3000 1000 1000 3000 1000 {limits}"
        assert run(r, Lua.LIMIT_RELEASE, keys, [first]) == [1]
    # when 30 admissions come in one run, a few per ms, until the requests run out,
    admits = [f"{2000 + i // 4} l{i} 60000 {20 + i} 1 {limits}" for i in range(30)]
    hsets = calls_of(r, "hset")
    together = run(r, Lua.LIMIT_ADMIT, grouped, admits)
    assert calls_of(r, "hset") - hsets == 1  # the buckets written once for the run
    assert together == [run(r, Lua.LIMIT_ADMIT, single, [words])[0] for words in admits]
    oks = [int(ok) for ok, _, _ in together]  # type: ignore[misc]
    assert 0 < sum(oks) < 30  # the tokens ran out first, then the calls wait
    assert state(r, grouped) == state(r, single)

    # and their answers come back: headers saying what is left (answers overtaking each
    # other), usage above and below the estimates, a refusal the provider did not count
    # (refunded), a release without a lease, and limits the provider announced,
    def release(now: int, lease: str, delta: int, refunded: int, left: tuple[int, int]) -> str:
        heard = f"20 {left[0]} 2500 1000 {left[1]} 2400 "
        return f"{now} {lease} {delta} 20 1000 1 {refunded} 25 {heard}{now - 5} {limits}"

    releases = [
        release(2010, "l0", 4, 0, (17, 900)),
        release(2011, "l1", -3, 0, (19, 950)),
        release(2011, "l2", 0, 1, (18, 800)),
        release(2012, "", 0, 0, (16, 700)),
        release(2013, "l3", 10, 0, (15, 600)),
    ]
    hsets = calls_of(r, "hset")
    assert run(r, Lua.LIMIT_RELEASE, grouped, releases) == [1] * 5
    assert calls_of(r, "hset") - hsets == 3  # the buckets once, the announced limits per scope
    for words in releases:
        assert run(r, Lua.LIMIT_RELEASE, single, [words]) == [1]
    # then both leave the same buckets, announced limits, leases and TTLs.
    assert state(r, grouped) == state(r, single)
    for g, s in zip(grouped, single, strict=True):
        assert abs(r.pttl(g) - r.pttl(s)) < 1000
