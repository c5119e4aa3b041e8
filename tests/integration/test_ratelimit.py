"""Global limits with real worker processes against the fake provider's enforced limits."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producers.client import Client
from providers.fake_server import max_in_window
from tests.conftest import WorkerPool, batchyard, cli_env, openai_line, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def endpoint(server: Any, **limits: Any) -> dict[str, Any]:
    return {
        "endpoints": {
            "fake": {
                "provider": "openai",
                "base_url": server.openai_url,
                "api_key": "sk-test",
                "model": "gpt-test",
                **limits,
            }
        },
        "policy": {"backoff_base_s": 0.05, "backoff_max_s": 0.2},
    }


def test_a_configured_cap_is_used_at_once_and_never_exceeded_in_any_minute(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    # Given a provider whose full bucket of 600 RPM / 60,000 TPM says there is plenty left,
    # answering in 1 s, and `rpm: 20` configured (a cap below what the headers say),
    cap, n = 20, 30
    server = fake_server(rpm=600, tpm=60_000, latency_ms=1000)
    run_workers(endpoint(server, rpm=cap), concurrency=n, processes=3)
    # when 3 worker processes run a batch of one and a half caps' worth,
    with Client(redis_url) as client:
        rows = [openai_line(f"c-{i}", "hello there", max_tokens=50) for i in range(n)]
        batch_id = client.submit_many(rows).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 150, "the batch")
        assert client.batch(batch_id).counts.completed == n, client.failures(batch_id)
    calls = list(server.requests)
    # then the whole cap is in flight at once (after the one request that waits for the
    # provider's first answer), not paced out over the minute,
    assert server.limits.stats.max_in_flight >= cap - 1, server.limits.stats.max_in_flight
    # and by the provider's own arrival log no 60 s window ever holds more than the cap.
    assert max_in_window((c.arrived for c in calls), 60.0) == cap
    assert not [c for c in calls if c.status == 429]


def test_retry_after_pauses_every_process(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    server = fake_server(latency_ms=20)
    config = endpoint(server, rpm=100_000)
    run_workers(config, concurrency=8, processes=3)
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"p-{i}", "x") for i in range(600)]).batch_id
        wait_until(lambda: len(server.requests) >= 50, 30, "traffic")
        # When the provider answers one 429 with retry-after: 5,
        server.faults.push("rate_limited:5")
        wait_until(lambda: client.batch(batch_id).finished, 90, "the batch")
    calls = list(server.requests)
    t429 = next(c.ts for c in calls if c.status == 429)
    # then no process sends to it for 5 s (0.3 s for requests already on their way).
    during = [c for c in calls if t429 + 0.3 < c.arrived < t429 + 4.9]
    assert during == [], [(round(c.arrived - t429, 2), c.custom_id) for c in during]
    assert any(c.arrived >= t429 + 4.9 for c in calls), "traffic resumes after the pause"


def test_a_killed_workers_lease_is_freed_after_its_ttl(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    # One request at a time; a call takes 2 s; a lease lives timeout_s + 5 = 8 s.
    server = fake_server(latency_ms=2000)
    config = endpoint(server, max_concurrency=1, timeout_s=3)
    pool = run_workers(config, concurrency=4)
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"k-{i}", "x") for i in range(3)]).batch_id
        wait_until(lambda: server.requests_arrived >= 1, 30, "the first call")
        os.kill(pool.children()[0], signal.SIGKILL)  # mid-call: its lease is never released
        leases = client.redis.zcard(f"{client.keys.ns}:rl:fake:leases")
        assert leases == 1
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch")
        assert client.redis.zcard(f"{client.keys.ns}:rl:fake:leases") == 0
    # The dead worker's lease held the endpoint until its 8 s TTL ran out, and no longer
    # (plus the restarted worker's redelivery, heartbeat 3 s, and one 2 s call of slack).
    arrivals = sorted(c.arrived for c in server.requests)
    gap = arrivals[1] - arrivals[0]
    assert 7.0 <= gap <= 8 + 3 + 2, [
        (round(c.ts - arrivals[0], 2), c.status, c.custom_id, c.fault) for c in server.requests
    ]


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_limits_learned_from_headers_use_the_bucket_without_429s(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
    vendor: str,
    tmp_path: Path,
) -> None:
    # Given a provider with a full bucket of 60 requests and 6,000 tokens that refills in 6 s
    # (the 600 RPM / 60,000 TPM scaled by ten), announced in its vendor's headers,
    # and nothing configured,
    n = 150
    server = fake_server(rpm=60, tpm=6_000, limit_window_s=6, latency_ms=20)
    config = endpoint(server)
    if vendor == "anthropic":
        config["endpoints"]["fake"].update(
            provider="anthropic", base_url=server.url, model="claude-test"
        )
    run_workers(config, concurrency=16, processes=3)
    # when 3 processes run a batch that wants 2.5 bucketfuls,
    with Client(redis_url) as client:
        rows = [openai_line(f"a-{i}", "hello there", max_tokens=30) for i in range(n)]
        batch_id = client.submit_many(rows).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 90, "the batch")
        assert client.batch(batch_id).counts.completed == n, client.failures(batch_id)
    # then the provider almost never has to refuse one (the bench times the runs).
    calls = list(server.requests)
    limited = [c for c in calls if c.status == 429]
    assert len(limited) <= 0.02 * len(calls), (len(limited), len(calls))
    # `batchyard providers` shows what was learned: the limits, what is left, when full.
    env = cli_env(redis_url, BATCHYARD_CONFIG=os.environ["BATCHYARD_CONFIG"], COLUMNS="300")
    table = batchyard("providers", env=env, cwd=tmp_path)
    assert re.search(r"\d+/60, full in [\d.]+s", table), table
    assert re.search(r"[\d,]+/6,000, full in [\d.]+s", table), table
