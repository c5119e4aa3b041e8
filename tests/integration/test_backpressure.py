"""Backpressure is not failure (#17): a refusing provider delays requests, never fails them
while their batch's window is open. Real worker processes, the fake server, Redis; the
server's own retry-after keeps the times short."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from producers.client import Client
from providers.fake_server import Outage, max_in_window
from tests.conftest import WorkerPool, openai_line, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def config(server: Any, **endpoint: Any) -> dict[str, Any]:
    return {
        "endpoints": {
            "fake": {
                "provider": "openai",
                "base_url": server.openai_url,
                "api_key": "sk-test",
                "model": "gpt-test",
                **endpoint,
            }
        },
        "policy": {"backoff_base_s": 0.05, "backoff_max_s": 0.5, "max_attempts": 1},
    }


def test_an_outage_of_429s_delays_every_request_and_fails_none(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    # Given a provider that answers 429 with retry-after: 2 to everything for 7 s (the
    # issue's 20 s for 60 s, scaled down), and a budget of one attempt a request,
    retry_after, outage_s, n = 2.0, 7.0, 200
    server = fake_server(outage=Outage(duration_s=outage_s, retry_after_s=retry_after))
    run_workers(config(server), concurrency=16, processes=2)
    # when a 200-request batch with a 1 h window runs through it,
    with Client(redis_url) as client:
        rows = [openai_line(f"o-{i}", "hello") for i in range(n)]
        batch_id = client.submit_many(rows, completion_window_s=3600).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 90, "the batch")
        counts = client.batch(batch_id).counts
        failures = client.failures(batch_id)
    # then every request succeeds, although many were refused (each refusal is past the
    # budget: before #17 every one of them failed),
    assert counts.completed == n and counts.failed == 0, failures
    calls = list(server.requests)
    refused = [c for c in calls if c.status == 429]
    assert len({c.custom_id for c in refused}) >= 2
    # and while the endpoint was paused the server saw one probe per retry-after at most
    # (after the first refusals' half second: requests already on their way then).
    first = min(c.arrived for c in refused)
    outage = server.limits.outage
    assert outage is not None and outage.started_at is not None
    paused = [c.arrived for c in calls if first + 0.5 < c.arrived < first + outage_s]
    assert 1 <= len(paused) <= outage_s / retry_after + 1, paused
    assert max_in_window(paused, retry_after) <= 1, [round(t - first, 2) for t in paused]


def test_without_limit_headers_concurrency_adapts_to_what_the_server_takes(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    # Given a server without limit headers that answers 503 above 32 requests in flight
    # (a saturated vLLM), and 2 processes with 96 slots between them,
    n = 1500
    server = fake_server(max_in_flight=32, latency_ms=200, latency_jitter_ms=50)
    run_workers(config(server), concurrency=48, processes=2)
    with Client(redis_url) as client:
        rows = [openai_line(f"c-{i}", "hello") for i in range(n)]
        batch_id = client.submit_many(rows, completion_window_s=3600).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 120, "the batch")
        counts = client.batch(batch_id).counts
        failures = client.failures(batch_id)
    # then every request succeeds, under 2% of the calls were turned away,
    assert counts.completed == n and counts.failed == 0, failures
    calls = list(server.requests)
    busy = sum(c.status == 503 for c in calls)
    assert busy < 0.02 * len(calls), (busy, len(calls))
    # and over the middle half of the run about 32 were in flight.
    ok = sorted(c.arrived for c in calls if c.status == 200)
    quarter = (ok[-1] - ok[0]) / 4
    mean = server.limits.stats.mean_in_flight(ok[0] + quarter, ok[-1] - quarter)
    assert 24 <= mean <= 40, mean
