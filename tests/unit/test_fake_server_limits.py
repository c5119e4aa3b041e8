"""The fake server rations itself like a provider: buckets, announced limits, outages, 503s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from providers.fake_server import FakeServer, Outage, TokenBuckets, max_in_window
from providers.fake_server.__main__ import parser
from providers.fake_server.limits import LimitStats, TokenBucket
from providers.headers import rate_limits, retry_after_s

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
BODY: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello fake"}]}
ANTHROPIC_BODY = {**BODY, "max_tokens": 16}


async def post(
    session: aiohttp.ClientSession, server: FakeServer, path: str = OPENAI
) -> tuple[int, Any, CIMultiDict[str]]:
    body: dict[str, Any] = BODY
    headers: dict[str, str] = {}
    if path == ANTHROPIC:
        body, headers = ANTHROPIC_BODY, {"anthropic-version": "2023-06-01"}
    async with session.post(server.url + path, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None), CIMultiDict(r.headers)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition every 10 ms; fail after `timeout_s`."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition never held")


def test_a_bucket_is_full_at_start_and_refills_continuously() -> None:
    now = [0.0]
    bucket = TokenBucket(600, 60.0, lambda: now[0])
    assert bucket.level() == 600 and bucket.full_in_s() == 0
    bucket.take(600)
    assert bucket.wait_s(1) == pytest.approx(0.1)  # 10 a second
    now[0] = 30.0
    assert bucket.level() == pytest.approx(300)
    assert bucket.full_in_s() == pytest.approx(30)
    assert bucket.wait_s(601) == float("inf")


def test_buckets_admit_600_at_once_then_ten_a_second() -> None:
    # Given 600 RPM as OpenAI enforces it,
    now = [0.0]
    buckets = TokenBuckets(rpm=600, tpm=60_000, clock=lambda: now[0])
    # the whole bucket goes at once,
    assert all(buckets.admit(10) is None for _ in range(600))
    assert buckets.admit(10) == pytest.approx(0.1)
    state = buckets.state()
    assert (state.remaining_requests, state.remaining_tokens) == (0, 54_000)
    assert state.reset_requests_s == pytest.approx(60)
    # then it refills at 10 a second: 100 more in the next 10 s, and no more.
    admitted = 0
    while now[0] < 10.0:
        now[0] += 0.01
        admitted += buckets.admit(10) is None
    assert admitted == 100
    # A request larger than the bucket can never fit (but the server stays answerable).
    assert buckets.admit(70_000) == 24 * 3600


async def test_openai_headers_announce_the_bucket_and_429_says_when(
    session: aiohttp.ClientSession,
) -> None:
    now = [100.0]
    async with FakeServer(rpm=3, tpm=1000, clock=lambda: now[0]) as server:
        answers = [await post(session, server) for _ in range(4)]
        now[0] += 20  # one request's worth refilled
        after = await post(session, server)
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    first = rate_limits(answers[0][2])
    assert (first.requests.limit, first.requests.remaining) == (3, 2)
    assert first.tokens.limit == 1000 and first.requests.reset_s == pytest.approx(20)
    limited = answers[3][2]
    assert limited["retry-after"] == "20" and limited["retry-after-ms"] == "20000"
    assert limited["x-ratelimit-remaining-requests"] == "0"
    assert limited["x-ratelimit-reset-requests"] == "1m0s"  # full again in a minute
    assert retry_after_s(limited) == pytest.approx(20)
    assert after[0] == 200
    assert [r.fault for r in server.requests] == ["ok", "ok", "ok", "limit", "ok"]
    assert (server.limits.stats.seen, server.limits.stats.limited) == (5, 1)


@pytest.mark.parametrize(
    ("fmt", "path", "present", "absent"),
    [
        ("anthropic", OPENAI, "anthropic-ratelimit-requests-limit", "x-ratelimit-limit-requests"),
        ("openai", ANTHROPIC, "x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"),
        ("wire", ANTHROPIC, "anthropic-ratelimit-requests-limit", "x-ratelimit-limit-requests"),
    ],
)
async def test_a_knob_picks_the_header_format(
    session: aiohttp.ClientSession, fmt: Any, path: str, present: str, absent: str
) -> None:
    async with FakeServer(rpm=1, tpm=10_000, limit_headers=fmt) as server:
        ok = await post(session, server, path)
        limited = await post(session, server, path)
    for status, _, headers in (ok, limited):
        assert present in headers and absent not in headers, (status, dict(headers))
    assert rate_limits(ok[2]).requests.limit == 1
    assert rate_limits(limited[2]).requests.remaining == 0


async def test_without_headers_the_limit_is_still_enforced(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeServer(rpm=1, limit_headers="none") as server:
        ok = await post(session, server)
        limited = await post(session, server)
    assert (ok[0], limited[0]) == (200, 429)
    assert not rate_limits(ok[2]) and not rate_limits(limited[2])
    assert "retry-after" in limited[2]  # a 429 still says when


async def test_an_outage_refuses_everything_then_recovers(
    session: aiohttp.ClientSession,
) -> None:
    # Given an outage of 60 s that starts with the first request,
    now = [0.0]
    outage = Outage(duration_s=60, retry_after_s=20)
    async with FakeServer(outage=outage, clock=lambda: now[0]) as server:
        during = []
        for t in (5.0, 25.0, 59.9):
            now[0] = t
            during.append(await post(session, server, ANTHROPIC))
        now[0] = 65.0
        after = await post(session, server, ANTHROPIC)
    # every request in it gets 429 with retry-after: 20 in the vendor's format,
    assert [d[0] for d in during] == [429, 429, 429]
    assert all(d[2]["retry-after"] == "20" for d in during)
    assert during[0][1]["error"]["type"] == "rate_limit_error"
    # and afterwards the server answers again; the probes were counted.
    assert after[0] == 200
    assert server.limits.stats.outage_refused == 3
    assert [r.fault for r in server.requests] == ["outage"] * 3 + ["ok"]


async def test_above_the_concurrency_cap_a_local_server_answers_503(
    session: aiohttp.ClientSession,
) -> None:
    # Given a server that can serve 2 requests at once, each taking 300 ms,
    async with FakeServer(max_in_flight=2, rpm=1000) as server:
        server.faults.push(*["slow:300"] * 2)
        slow = [asyncio.create_task(post(session, server)) for _ in range(2)]
        await until(lambda: server.limits.stats.in_flight == 2)
        # when a third arrives meanwhile, it gets a 503 with no limit headers,
        status, body, headers = await post(session, server)
        done = await asyncio.gather(*slow)
        # and once they are answered, there is room again.
        again = await post(session, server)
    assert status == 503 and body["error"]["code"] == "server_is_overloaded"
    assert not rate_limits(headers) and "retry-after" not in headers
    assert [d[0] for d in done] == [200, 200] and again[0] == 200
    stats = server.limits.stats
    assert (stats.busy, stats.max_in_flight, stats.in_flight) == (1, 2, 0)
    assert server.requests[0].fault == "busy" and server.requests[0].status == 503


def test_mean_in_flight_is_weighted_by_time() -> None:
    stats = LimitStats()
    stats.timeline.extend([(10.0, 1), (11.0, 2), (13.0, 1), (14.0, 0)])
    assert stats.mean_in_flight(10.0, 14.0) == pytest.approx((1 + 2 * 2 + 1) / 4)
    assert stats.mean_in_flight(12.0, 16.0) == pytest.approx((2 + 1) / 4)
    assert stats.mean_in_flight(5.0, 5.0) == 0.0


def test_max_in_window_is_half_open() -> None:
    assert max_in_window([0, 1, 2, 60, 61], 60) == 3  # 0 has left when 60 arrives
    assert max_in_window([3, 2, 1, 0], 2.5) == 3
    assert max_in_window([], 60) == 0


def test_cli_options_for_the_limits() -> None:
    args = parser().parse_args(
        ["--rpm", "600", "--limit-headers", "anthropic", "--max-in-flight", "32"]
    )
    assert (args.limit_algorithm, args.limit_headers, args.max_in_flight) == (
        "bucket",
        "anthropic",
        32,
    )
    args = parser().parse_args(["--outage-s", "60", "--limit-algorithm", "window"])
    assert (args.outage_s, args.outage_retry_after_s, args.limit_algorithm) == (60, 20, "window")
    with pytest.raises(SystemExit):
        parser().parse_args(["--limit-headers", "smoke-signals"])
