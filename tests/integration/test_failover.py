"""Failover, breaker, budgets, cancellation, deadlines and re-runs, with real workers and Redis."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producers.client import Client
from producers.collect import collect
from producers.progress import describe
from schemas.result import LLMResult
from tests.conftest import WorkerPool, batchyard, cli_env, openai_line, read_jsonl, wait_until

pytestmark = pytest.mark.integration

FAST_POLICY = {"retries_per_endpoint": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}


def finish(client: Client, batch_id: str, timeout_s: float = 90) -> list[LLMResult]:
    wait_until(lambda: client.batch(batch_id).finished, timeout_s, f"batch {batch_id} to finish")
    return [r for _, _, r in client.iter_results(batch_id)]


def two_endpoints(primary: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "endpoints": {
            "primary": {"provider": "mock", **primary},
            "secondary": {"provider": "mock", "latency_ms": 5},
        },
        "routes": {"default": ["primary", "secondary"]},
        "policy": FAST_POLICY,
        **extra,
    }


def test_primary_down_everything_succeeds_on_secondary_and_breaker_opens(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    # Given a primary that answers 500 to everything and a healthy secondary,
    n, concurrency = 400, 10
    run_workers(two_endpoints({"fault_rates": {"server_error": 1.0}}), concurrency=concurrency)
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"f-{i}", "x") for i in range(n)]).batch_id
        results = finish(client, batch_id)
        health = client.redis.hgetall(f"{client.keys.ns}:health:primary")
    # then every request succeeds on the secondary,
    assert len(results) == n
    assert all(r.status == "succeeded" and r.endpoint == "secondary" for r in results)
    # every hop is recorded,
    assert all(r.attempts[-1].endpoint == "secondary" for r in results)
    assert all(
        a.error in ("server_error", "circuit_open") for r in results for a in r.attempts[:-1]
    )
    # and once the breaker opened the primary got no more real calls: at most the calls in
    # flight when it opened (3 tries each) plus the failures that opened it.
    primary_calls = sum(1 for r in results for a in r.attempts if a.error == "server_error")
    assert health[b"state"] == b"open"
    assert primary_calls <= 3 * concurrency + 5, primary_calls
    skipped = sum(1 for r in results if any(a.error == "circuit_open" for a in r.attempts))
    assert skipped >= n - 3 * concurrency - 5


def test_every_endpoint_down_ends_errored_with_the_full_hop_list(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    config = two_endpoints({"fault_rates": {"server_error": 1.0}})
    config["endpoints"]["secondary"]["fault_rates"] = {"overloaded": 1.0}
    config["endpoints"]["primary"]["breaker"] = {"min_failures": 10_000}
    config["endpoints"]["secondary"]["breaker"] = {"min_failures": 10_000}
    # An overloaded endpoint is backpressure: it is waited out until the request's deadline.
    # That deadline is the policy's backpressure cap, not a completion window: a request whose
    # window ends before its secondary hop is sent rightly ends `expired` unsent, so a 3 s
    # window made the outcome a race against the machine's load. The cap counts from
    # submission too, but only ends waiting: every request reaches the secondary, however late.
    config["policy"] = {**FAST_POLICY, "max_backpressure_s": 3}
    run_workers(config)
    with Client(redis_url) as client:
        rows = [openai_line(f"d-{i}", "x") for i in range(30)]
        batch_id = client.submit_many(rows).batch_id
        results = finish(client, batch_id)
        batch = client.batch(batch_id)
    assert batch.counts.failed == 30 and batch.status.value == "completed"
    for r in results:
        assert r.status == "errored" and r.error is not None
        assert r.error.code == "overloaded"
        hops = [(a.endpoint, a.error) for a in r.attempts]
        assert hops[:3] == [("primary", "server_error")] * 3
        assert len(hops) > 3 and set(hops[3:]) == {("secondary", "overloaded")}
        assert "primary/" in r.error.message and "secondary/" in r.error.message
        assert "would pass the request's deadline" in r.error.message


def test_invalid_request_fails_at_once_and_budget_caps_attempts(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    config = two_endpoints({"fault_rates": {"invalid_request": 1.0}})
    run_workers(config)
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"i-{i}", "x") for i in range(10)]).batch_id
        results = finish(client, batch_id)
    assert all(r.status == "errored" and len(r.attempts) == 1 for r in results)
    assert {r.error.code for r in results if r.error} == {"invalid_request"}


def test_prompt_too_long_for_primary_goes_straight_to_secondary(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    # A request without an output limit counts schemas.tokens.DEFAULT_OUTPUT_TOKENS (512):
    # "hi" needs ~513 tokens, the long prompt ~1012.
    run_workers(two_endpoints({"max_context_tokens": 600}))
    with Client(redis_url) as client:
        rows = [openai_line("short", "hi"), openai_line("long", "word " * 400)]
        batch_id = client.submit_many(rows).batch_id
        results = {r.custom_id: r for r in finish(client, batch_id)}
    assert results["short"].endpoint == "primary"
    assert results["long"].endpoint == "secondary"
    first = results["long"].attempts[0]
    assert (first.endpoint, first.error, first.latency_ms) == ("primary", "context_too_long", 0.0)


@pytest.mark.slow
def test_cancel_stops_new_calls_and_counts_add_up(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    n = 5000
    run_workers({"endpoints": {"mock": {"provider": "mock", "latency_ms": 40}}}, concurrency=20)
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"c-{i}", "x") for i in range(n)]).batch_id
        wait_until(lambda: client.batch(batch_id).counts.done >= 200, 60, "progress")
        assert client.cancel(batch_id).value == "cancelling"
        acknowledged = time.time() + 1.0 + 0.2  # one cancel poll interval, plus clock slack
        results = finish(client, batch_id)
        batch = client.batch(batch_id)
    statuses = Counter(r.status for r in results)
    assert batch.status.value == "cancelled"
    assert statuses["succeeded"] + statuses["cancelled"] == n == batch.counts.total
    assert batch.counts.completed + batch.counts.failed == n
    assert statuses["cancelled"] > n // 2
    late = [
        r for r in results if r.status == "succeeded" and (r.timings.started_at or 0) > acknowledged
    ]
    assert late == []
    assert all(r.attempts == [] for r in results if r.status == "cancelled")


def test_requests_past_the_deadline_expire_unsent(
    redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    run_workers({"endpoints": {"mock": {"provider": "mock", "latency_ms": 50}}}, concurrency=5)
    with Client(redis_url) as client:
        finish(client, client.submit_many([openai_line("warm-up", "x")]).batch_id)
        rows = [openai_line(f"e-{i}", "x") for i in range(400)]
        report = client.submit_many(rows, completion_window_s=2.0)
        deadline = client.batch(report.batch_id).created_at + 2.0
        results = finish(client, report.batch_id)
        batch = client.batch(report.batch_id)
    statuses = Counter(r.status for r in results)
    assert statuses["expired"] > 0 and statuses["succeeded"] > 0
    # `batchyard status` shows them:
    assert batch.counts.expired == statuses["expired"]
    assert f"expired {statuses['expired']}" in describe(batch)
    assert statuses["expired"] + statuses["succeeded"] == 400
    assert all(r.attempts == [] for r in results if r.status == "expired")
    assert all(
        (r.timings.started_at or 0) <= deadline + 0.05 for r in results if r.status == "succeeded"
    )


def test_retry_failed_reruns_only_failures_into_the_same_batch(
    tmp_path: Path, redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    flaky = {
        "provider": "mock",
        "seed": 7,
        "fault_rates": {"server_error": 0.4},
        "breaker": {"min_failures": 100_000},
    }
    pool = run_workers({"endpoints": {"mock": flaky}, "policy": {"retries_per_endpoint": 0}})
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"r-{i}", "x") for i in range(200)]).batch_id
        first = finish(client, batch_id)
        failed_ids = {r.custom_id for r in first if r.status == "errored"}
        assert 20 < len(failed_ids) < 150
        assert set(client.failures(batch_id)) == {"server_error"}
        pool.stop()
        run_workers({"endpoints": {"mock": {"provider": "mock"}}})
        assert client.retry_failed(batch_id) == len(failed_ids)
        assert client.retry_failed(batch_id) == 0, "a second retry must not re-run anything"
        final = finish(client, batch_id)
        batch = client.batch(batch_id)
        collect(client, batch_id, tmp_path / "out.jsonl")
    assert batch.counts.completed == 200 and batch.counts.failed == 0
    assert sorted(r.custom_id or "" for r in final) == sorted(f"r-{i}" for i in range(200))
    assert all(r.status == "succeeded" for r in final)
    ids = [row["custom_id"] for row in read_jsonl(tmp_path / "out.jsonl")]
    assert len(ids) == 200 and len(set(ids)) == 200
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []


def test_breaker_opens_shows_in_providers_and_closes_after_a_good_probe(
    tmp_path: Path, redis_url: str, run_workers: Callable[..., WorkerPool]
) -> None:
    breaker = {"min_calls": 5, "min_failures": 5, "open_s": 1.0}
    down = two_endpoints({"fault_rates": {"server_error": 1.0}, "breaker": breaker})
    pool = run_workers(down, concurrency=4)
    env = cli_env(redis_url, BATCHYARD_CONFIG=os.environ["BATCHYARD_CONFIG"])
    with Client(redis_url) as client:
        first = client.submit_many([openai_line(f"a-{i}", "x") for i in range(60)]).batch_id
        finish(client, first)
        # Given the breaker opened, `batchyard providers` shows it.
        table = batchyard("providers", env=env, cwd=tmp_path)
        row = next(line for line in table.splitlines() if "primary" in line)
        assert "open" in row, table
        pool.stop()
        # When the primary recovers and the open period has passed,
        healthy = two_endpoints({"breaker": breaker})
        run_workers(healthy, concurrency=4)
        health = f"{client.keys.ns}:health:primary"
        opened_until = float(client.redis.hget(health, "open_until") or 0)
        assert opened_until > 0, "the breaker never opened"
        wait_until(lambda: time.time() >= opened_until, 10, "the breaker's open period to end")
        second = client.submit_many([openai_line(f"b-{i}", "x") for i in range(20)]).batch_id
        results = finish(client, second)
        state = client.redis.hget(health, "state")
    # then one probe succeeds, the breaker closes and the primary serves again.
    assert state == b"closed"
    assert all(r.status == "succeeded" for r in results)
    assert sum(r.endpoint == "primary" for r in results) >= 15
    table = batchyard("providers", env=env, cwd=tmp_path)
    assert "closed" in next(line for line in table.splitlines() if "primary" in line)


def test_flaky_primary_all_succeed_once_and_attempts_match_the_server_log(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given a primary that answers 20% 500s and 10% 429s with retry-after,
    server = fake_server()
    server.faults.set_rates({"server_error": 0.2, "rate_limited": 0.1}, seed=11, retry_after_s=0.2)
    config = two_endpoints({})
    config["endpoints"]["primary"] = {
        "provider": "openai",
        "base_url": server.openai_url,
        "model": "gpt-flaky",
        "breaker": {"min_failures": 100_000},
    }
    config["policy"] = {**FAST_POLICY, "retries_per_endpoint": 4}
    run_workers(config, concurrency=8, processes=2)
    n = 150
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"y-{i}", "x") for i in range(n)]).batch_id
        results = finish(client, batch_id)
    # then every request succeeds exactly once,
    assert sorted(r.custom_id or "" for r in results) == sorted(f"y-{i}" for i in range(n))
    assert all(r.status == "succeeded" for r in results)
    # and the attempts the results record are exactly the calls the server saw.
    seen: Counter[str] = Counter(c.custom_id for c in server.requests)
    recorded = Counter(r.custom_id for r in results for a in r.attempts if a.endpoint == "primary")
    assert recorded == seen
    faults = Counter(c.status for c in server.requests)
    assert faults[500] > 0 and faults[429] > 0


def test_primary_503_for_everything_gets_only_probe_traffic_once_the_breaker_opens(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    server = fake_server()
    server.faults.set_rates({"unavailable": 1.0})
    config = two_endpoints({})
    breaker = {"min_calls": 10, "min_failures": 10, "open_s": 60}
    config["endpoints"]["primary"] = {
        "provider": "openai",
        "base_url": server.openai_url,
        "model": "gpt-down",
        "breaker": breaker,
    }
    concurrency, n = 8, 400
    run_workers(config, concurrency=concurrency)
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"o-{i}", "x") for i in range(n)]).batch_id
        results = finish(client, batch_id)
        state = client.redis.hget(f"{client.keys.ns}:health:primary", "state")
    assert all(r.status == "succeeded" and r.endpoint == "secondary" for r in results)
    assert state == b"open"
    # Counted at the server: the calls that opened the breaker, plus what was in flight (each
    # call retried up to 3 times) — and, with open_s 60, no probe during this test.
    calls = len(server.requests)
    assert all(c.status == 503 for c in server.requests)
    assert calls <= breaker["min_calls"] + 3 * concurrency, calls
    assert (
        sum(
            1
            for r in results
            for a in r.attempts
            if a.endpoint == "primary" and a.error == "overloaded"
        )
        == calls
    )


def test_json_mode_requests_skip_endpoints_that_cannot_honour_it(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    server = fake_server()
    config = two_endpoints({})
    # Anthropic's Messages API has no response_format: the adapter does not declare json_object.
    config["endpoints"]["primary"] = {
        "provider": "anthropic",
        "base_url": server.url,
        "api_key": "k",
        "model": "claude-test",
    }
    run_workers(config, concurrency=4)
    with Client(redis_url) as client:
        rows = [
            openai_line("plain", "hi"),
            openai_line("json", "hi", response_format={"type": "json_object"}),
        ]
        results = {r.custom_id: r for r in finish(client, client.submit_many(rows).batch_id)}
    assert results["plain"].endpoint == "primary"
    assert results["json"].endpoint == "secondary" and results["json"].status == "succeeded"
    first = results["json"].attempts[0]
    assert (first.endpoint, first.error, first.latency_ms) == ("primary", "unsupported", 0.0)
    assert [c.custom_id for c in server.requests] == ["plain"]
