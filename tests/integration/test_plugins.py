"""Request hooks end to end: the response cache and the redaction hook."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from producers.client import Client
from tests.conftest import WorkerPool, openai_line, wait_until

pytestmark = pytest.mark.integration


def test_half_duplicated_prompts_make_half_the_provider_calls(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    server = fake_server(latency_ms=50)
    endpoint = {
        "provider": "openai",
        "base_url": server.openai_url,
        "model": "gpt-test",
        "rpm": 100_000,
    }
    run_workers(
        {"endpoints": {"fake": endpoint}, "plugins": {"cache": {"ttl_s": 600}}},
        concurrency=8,
        processes=2,
    )
    # 100 requests, every prompt twice, duplicates often in flight at the same moment.
    rows = [openai_line(f"c-{i}-{copy}", f"prompt {i}") for i in range(50) for copy in (0, 1)]
    random.Random(5).shuffle(rows)
    with Client(redis_url) as client:
        batch_id = client.submit_many(rows).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch")
        results = {r.custom_id: r for _, _, r in client.iter_results(batch_id)}
    assert len(results) == 100 and all(r.status == "succeeded" for r in results.values())
    calls = [(c.custom_id, c.status, c.fault) for c in server.requests]
    assert len(calls) == 50, sorted(calls)
    for i in range(50):
        first, second = results[f"c-{i}-0"], results[f"c-{i}-1"]
        assert first.output == second.output == f"prompt {i}"
    hits = [r for r in results.values() if r.extra.get("cache") == "hit"]
    assert len(hits) == 50 and all(r.cost_usd == 0 for r in hits)


def test_redaction_masks_prompts_before_they_leave_and_answers_before_storage(
    redis_url: str,
    fake_server: Callable[..., Any],
    run_workers: Callable[..., WorkerPool],
) -> None:
    server = fake_server()  # echoes the last user message it received
    endpoint = {"provider": "openai", "base_url": server.openai_url, "model": "gpt-test"}
    run_workers(
        {
            "endpoints": {"fake": endpoint},
            "plugins": {
                "redact": {"patterns": [r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", r"\b\d{3}-\d{4}\b"]}
            },
        },
        concurrency=8,
        processes=2,
    )
    with Client(redis_url) as client:
        batch_id = client.submit_many(
            [openai_line("r-1", "mail ann.lee+x@example.co.uk or call 555-0100 today")]
        ).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch")
        (_, _, result), *_ = client.iter_results(batch_id)
    assert result.output == "mail [REDACTED] or call [REDACTED] today"
