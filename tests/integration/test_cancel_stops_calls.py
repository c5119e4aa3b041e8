"""S8 (issue #19): a cancel stops new provider calls at once. Messages a worker fetched before
the cancel, waiting for a concurrency slot, used to be sent anyway for seconds; now a worker
asks right before each call whether the batch was cancelled (a flag its pub/sub listener keeps,
no Redis read per call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producers.client import Client
from tests.conftest import WorkerPool, cli_env, openai_line, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "sk-upstream-cancel-test-0123"
CHAT = "/v1/chat/completions"


def test_s8_no_new_provider_call_later_than_200_ms_after_cancel_returns(
    redis_url: str,
    fake_server: Callable[..., Any],
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An upstream that takes 100 ms a call, 40 calls at once, and a worker that fetched
    # far more messages than that (they wait for a slot of the endpoint's concurrency),
    server = fake_server(api_key=KEY, latency_ms=100)
    endpoint = {
        "provider": "openai",
        "base_url": server.openai_url,
        "api_key": KEY,
        "model": "gpt-test",
        "max_concurrency": 40,
    }
    path = write_config({"endpoints": {"upstream": endpoint}})
    monkeypatch.setenv("BATCHYARD_CONFIG", str(path))
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(path)), "--concurrency", "200")
    with Client(redis_url) as client:
        rows = [openai_line(f"c-{i}", "x") for i in range(3000)]
        batch_id = client.submit_many(rows).batch_id
        wait_until(lambda: server.requests_seen >= 200, 60, "calls under way")
        # when the batch is cancelled mid-run,
        client.cancel(batch_id)
        returned = time.time()  # the fake server stamps `arrived` with this clock
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch to end")
        batch = client.batch(batch_id)
    # no call reaches the upstream later than 200 ms after the cancel returned (calls in
    # flight at the cancel finish; none is started after it).
    calls = server.calls(path=CHAT)
    late = sorted(round(r.arrived - returned, 3) for r in calls if r.arrived > returned + 0.2)
    assert late == [], f"{len(late)} calls after the cancel, at +s {late[:10]}"
    assert batch.status.value == "cancelled"
    assert batch.counts.completed == len([r for r in calls if r.status == 200])
    assert batch.counts.cancelled == 3000 - batch.counts.completed > 0
