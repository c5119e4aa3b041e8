"""Batch offload (#21), scaled down: `mode: batch` endpoints go through the fake vendor's Batch
APIs with real worker processes, Redis and HTTP; the live hop takes what the vendor does not
finish in time or fails."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from producers.client import Client
from providers.fake_server.batch_state import BatchKnobs
from schemas.config import Price, parse_config
from schemas.result import LLMResult
from tests.conftest import WorkerPool, openai_line, wait_until

pytestmark = pytest.mark.integration

PRICE = {"input": 1.0, "output": 2.0}
LIVE_PATHS = ("/v1/chat/completions", "/v1/messages")


def config(server: Any, vendor: str, **batch: Any) -> dict[str, Any]:
    base = server.url if vendor == "anthropic" else server.openai_url
    knobs = {"max_requests": 1000, "max_wait_s": 0.3, "poll_s": 0.2, "lease_s": 2, **batch}
    return {
        "endpoints": {
            "vendor-batch": {
                "provider": vendor,
                "base_url": base,
                "model": "m",
                "mode": "batch",
                "api_key": "test-key",
                "batch": knobs,
                "prices": {"*": PRICE},
            },
            "live": {"provider": "openai", "base_url": server.openai_url, "prices": {"*": PRICE}},
        },
        "routes": {"default": ["vendor-batch", "live"]},
        "policy": {"backoff_base_s": 0.01, "backoff_max_s": 0.05},
    }


def finish(client: Client, batch_id: str, timeout_s: float = 90) -> list[LLMResult]:
    wait_until(lambda: client.batch(batch_id).finished, timeout_s, f"batch {batch_id} to finish")
    return [r for _, _, r in client.iter_results(batch_id)]


def live_calls(server: Any) -> int:
    return sum(len(server.calls(path=p)) for p in LIVE_PATHS)


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_all_through_vendor_batches_at_half_price(
    vendor: str,
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    # Given 60 requests routed [vendor-batch, live] with a 24 h window,
    n = 60
    server = fake_server(batches=BatchKnobs(delay_s=0.5))
    run_workers(config(server, vendor), processes=2)
    with Client(redis_url) as client:
        rows = [openai_line(f"o-{i}", f"question {i}") for i in range(n)]
        batch_id = client.submit_many(rows, completion_window_s=86_400).batch_id
        results = finish(client, batch_id)
    # all succeed through vendor batches, the fake server sees no live call,
    assert len(results) == n
    assert all(r.status == "succeeded" and r.endpoint == "vendor-batch" for r in results)
    assert live_calls(server) == 0
    assert 1 <= len(server.batches.batches) <= n
    assert server.batches.lines_done == n
    # each answer is the vendor's answer to its own request,
    assert {r.custom_id: r.output for r in results} == {f"o-{i}": f"question {i}" for i in range(n)}
    # and each costs half the live price.
    price = Price(**PRICE)
    for r in results:
        live = price.cost(r.usage.input_tokens, r.usage.output_tokens)
        assert r.cost_usd == pytest.approx(live / 2)
        assert r.extra["saved_usd"] == pytest.approx(live / 2)


def test_never_finishing_vendor_batch_is_cancelled_and_falls_back_live(
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    # Given a vendor that never finishes and a 60 s window with a 55 s margin (scaled down),
    n = 30
    server = fake_server(batches=BatchKnobs(never_finish=True))
    run_workers(config(server, "openai", fallback_margin_s=55))
    with Client(redis_url) as client:
        rows = [openai_line(f"n-{i}", f"q{i}") for i in range(n)]
        report = client.submit_many(rows, completion_window_s=60)
        results = finish(client, report.batch_id)
        deadline = client.batch(report.batch_id).created_at + 60
    # the vendor batch is cancelled at the margin (the fake server saw the cancel),
    assert server.batches.cancels() and set(server.batches.cancels()) == set(server.batches.batches)
    # and every request finishes on the live endpoint before the deadline.
    assert len(results) == n
    assert all(r.status == "succeeded" and r.endpoint == "live" for r in results)
    assert all(r.attempts[0].endpoint == "vendor-batch" for r in results)
    assert all(r.attempts[0].error == "batch_cancelled" for r in results)
    assert all(r.timings.finished_at < deadline for r in results)
    assert len(server.calls(path="/v1/chat/completions")) == n


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_failed_lines_retry_on_the_live_hop(
    vendor: str,
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    # Given a vendor that fails 10% of each batch's lines,
    n = 50
    server = fake_server(batches=BatchKnobs(fail_fraction=0.1))
    run_workers(config(server, vendor))
    with Client(redis_url) as client:
        rows = [openai_line(f"e-{i}", f"q{i}") for i in range(n)]
        batch_id = client.submit_many(rows).batch_id
        results = finish(client, batch_id)
    # those lines retry on the live hop, totals add up, no custom_id appears twice.
    by_endpoint = [r.endpoint for r in results]
    assert len(results) == n and all(r.status == "succeeded" for r in results)
    assert len({r.custom_id for r in results}) == n
    live = by_endpoint.count("live")
    assert live == live_calls(server) == n // 10
    assert by_endpoint.count("vendor-batch") == n - live


def test_killed_workers_lose_no_vendor_batch(
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    # Given vendor batches open while every worker process is killed -9,
    n = 40
    server = fake_server(batches=BatchKnobs(delay_s=3))
    cfg = config(server, "openai", max_wait_s=0.1)
    pool = run_workers(cfg, processes=2)
    with Client(redis_url) as client:
        rows = [openai_line(f"k-{i}", f"q{i}") for i in range(n)]
        batch_id = client.submit_many(rows, completion_window_s=86_400).batch_id
        wait_until(lambda: len(server.batches.batches) >= 1, 30, "a vendor batch")
        wait_until(
            lambda: client.redis.llen(client.keys.offload("vendor-batch", "pending")) == 0,
            30,
            "every request in a vendor batch",
        )
        for pid in [*pool.children(), pool.proc.pid]:
            os.kill(pid, signal.SIGKILL)
        pool.proc.wait()
        assert not client.batch(batch_id).finished
        # when workers restart, all results arrive, once each.
        run_workers(cfg, processes=2)
        results = finish(client, batch_id)
    assert len(results) == n and all(r.status == "succeeded" for r in results)
    assert sorted(r.custom_id or "" for r in results) == sorted(f"k-{i}" for i in range(n))
    assert live_calls(server) == 0


def test_cancelled_batch_is_not_sent_to_the_vendor(
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    # Given a batch cancelled before any worker ran,
    server = fake_server()
    cfg = config(server, "openai")
    with Client(redis_url, config=parse_config(cfg)) as client:
        batch_id = client.submit_many([openai_line(f"c-{i}", "x") for i in range(10)]).batch_id
        client.cancel(batch_id)
        run_workers(cfg)
        results = finish(client, batch_id)
    # its requests end cancelled and none reaches the vendor.
    assert len(results) == 10 and {r.status for r in results} == {"cancelled"}
    assert server.batches.batches == {} and live_calls(server) == 0


def test_cancel_of_a_batch_cancels_its_open_vendor_batch(
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    # Given requests waiting in a vendor batch that never finishes,
    server = fake_server(batches=BatchKnobs(never_finish=True))
    run_workers(config(server, "openai"))
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"v-{i}", "x") for i in range(10)]).batch_id
        wait_until(lambda: len(server.batches.batches) == 1, 30, "a vendor batch")
        # when the batchyard batch is cancelled,
        client.cancel(batch_id)
        results = finish(client, batch_id)
    # the vendor batch is cancelled too, and nothing runs live.
    assert server.batches.cancels() == list(server.batches.batches)
    assert len(results) == 10 and {r.status for r in results} == {"cancelled"}
    assert live_calls(server) == 0
