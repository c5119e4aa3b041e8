"""Provider fault storms: every request ends succeeded or with a named error, in bounded time."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from producers.client import Client
from tests.conftest import WorkerPool, openai_line, wait_until
from tests.reliability.conftest import Figures
from workers.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 60
#: Longest a storm batch may take: timeouts (1 s) x attempts, spread over 30 slots.
BOUND_S = 45
#: The storm batches' completion window: what bounds waiting out backpressure.
WINDOW_S = 15


def endpoint(base_url: str) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": base_url,
        "api_key": "sk-test",
        "model": "gpt-test",
        "timeout_s": 1,
        "breaker": {"open_s": 1, "min_calls": 10_000},
    }


#: name -> (fault rates, server latency ms, whether every request must end succeeded).
STORMS: dict[str, tuple[dict[str, float], float, bool]] = {
    "outage (503 for every call)": ({"unavailable": 1.0}, 0, False),
    "slow past timeout_s": ({}, 2500, False),
    "connection resets": ({"drop": 0.4, "cut": 0.3}, 0, False),
    "truncated and malformed bodies": ({"truncate": 0.4, "malformed": 0.2}, 0, False),
    "429 storm with retry-after": ({"rate_limited": 0.7}, 0, False),
}


@pytest.mark.timeout(240)
def test_every_fault_storm_ends_every_request_in_bounded_time(
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
    figures: Figures,
) -> None:
    server = fake_server(seed=7)
    config = {
        "endpoints": {
            "fake": endpoint(server.openai_url),
            "refused": endpoint(f"http://127.0.0.1:{free_port()}/v1"),
        },
        "routes": {"default": ["fake"], "refused": ["refused"]},
        "policy": {"retries_per_endpoint": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.5},
    }
    run_workers(config, concurrency=30)
    report: dict[str, Counter[str]] = {}
    with Client(redis_url) as client:
        storms = [*STORMS.items(), ("connection refused", ({}, 0, False))]
        for name, (rates, latency_ms, all_succeed) in storms:
            # Given the provider in this storm,
            server.faults.set_rates(rates, seed=7, retry_after_s=0.2)
            server.faults.latency_ms = latency_ms
            route = "refused" if name == "connection refused" else None
            lines = [openai_line(f"{name[:4]}-{i}", "x") for i in range(N)]
            started = time.monotonic()
            # (backpressure, 503s and timeouts, is waited out until the window ends)
            batch_id = client.submit_many(lines, route=route, completion_window_s=WINDOW_S).batch_id
            # when a batch runs through it, then it ends within the bound,
            wait_until(lambda b=batch_id: client.batch(b).finished, BOUND_S, f"{name} to end")
            took = time.monotonic() - started
            results = [r for _, _, r in client.iter_results(batch_id)]
            # with one result per request, each succeeded or failed with a named error code.
            assert len(results) == N and len({r.custom_id for r in results}) == N
            for r in results:
                assert r.status == "succeeded" or (r.error is not None and r.error.code), r
            if all_succeed:
                assert all(r.status == "succeeded" for r in results)
            report[name] = Counter(
                r.status if r.error is None else f"{r.status}:{r.error.code}" for r in results
            )
            print(f"\n{name}: {took:.1f}s {dict(report[name])}")
    server.faults.set_rates({})
    assert all(k.startswith("errored:") for k in report["outage (503 for every call)"])
    assert set(report["429 storm with retry-after"]) <= {"succeeded", "errored:rate_limited"}
    # Timeouts are backpressure: in-flight calls shrink to what answers in time and the rest
    # wait, so a request may still be waiting (expired) when the window ends.
    assert all(k.startswith(("errored:", "expired:")) for k in report["slow past timeout_s"])
    assert all(k.startswith("errored:") for k in report["connection refused"])
    figures.add("fault_storms", len(report))
