"""Recognisable API keys appear in no span, metric, log line, result or Redis value."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest

from producers.client import Client
from schemas.config import parse_config
from schemas.settings import Settings
from tests.conftest import openai_line, wait_until
from tests.reliability.conftest import Figures
from workers import metrics
from workers.process import start

pytestmark = pytest.mark.integration

GOOD_KEY = "sk-LEAKCANARY-good-7f3a9c"
BAD_KEY = "sk-LEAKCANARY-rejected-51d0e2"
CANARY = "LEAKCANARY"


def span_exporter() -> InMemorySpanExporter:
    """Spans of this process in memory (added to an SDK provider another test installed)."""
    spans = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return spans


def span_text(span: Any) -> str:
    parts = [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
    parts += [f"{e.name} {dict(e.attributes or {})}" for e in span.events]
    return " ".join(parts)


@pytest.fixture
def served_metrics() -> Iterator[None]:
    """Metrics recorded as a served worker records them (labels included), then as before."""
    before = metrics.RECORDING
    metrics.record(True)
    yield
    metrics.record(before)


def test_api_keys_leak_into_no_span_metric_log_result_or_redis_value(
    served_metrics: None,
    redis_url: str,
    fake_server: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    server = fake_server(api_key=GOOD_KEY)
    spans = span_exporter()
    endpoint = {"provider": "openai", "base_url": server.openai_url, "model": "gpt-test"}
    config = parse_config(
        {
            "endpoints": {
                "good": {**endpoint, "api_key": GOOD_KEY},
                "rejected": {**endpoint, "api_key": BAD_KEY},
            },
            "routes": {"default": ["good"], "bad": ["rejected"]},
        }
    )
    caplog.set_level(logging.DEBUG)
    # Given two batches, one answered and one rejected with an auth error (the error path
    # is where a key would most likely be echoed),
    worker = start(Settings(redis_url=redis_url), config, concurrency=4)
    try:
        with Client(redis_url, config=config) as client:
            ids = [
                client.submit_many([openai_line(f"{route}-{i}", "x") for i in range(10)], route=r)
                for route, r in (("ok", None), ("bad", "bad"))
            ]
            for report in ids:
                wait_until(lambda b=report.batch_id: client.batch(b).finished, 30, "the batch")
            results = [
                r.model_dump_json() for rep in ids for _, _, r in client.iter_results(rep.batch_id)
            ]
            failures = [repr(client.failures(rep.batch_id)) for rep in ids]
            assert any('"auth_error"' in r for r in results) and any(
                '"succeeded"' in r for r in results
            )
    finally:
        worker.stop(grace_s=5)
    # then no trace of either key in any span, metric sample, log record, result or Redis value.
    texts = {
        "span": [span_text(s) for s in spans.get_finished_spans()],
        "metric": [generate_latest(REGISTRY).decode()],
        "log": [f"{r.getMessage()} {r.__dict__}" for r in caplog.records],
        "result": results + failures,
    }
    r = redis.Redis.from_url(redis_url)
    texts["redis"] = [repr(r.dump(k)) + k.decode() for k in r.scan_iter()]
    r.close()
    assert texts["span"] and texts["log"] and texts["redis"]
    assert "batchyard_jobs" in texts["metric"][0]
    leaks = [(kind, t[:200]) for kind, items in texts.items() for t in items if CANARY in t]
    figures.add("leaks_found", len(leaks))
    assert leaks == []
