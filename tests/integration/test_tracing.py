"""One request is one trace: producer, consumer per hop, GenAI client span per provider call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from producers.client import Client
from schemas.config import parse_config
from schemas.settings import Settings
from tests.conftest import openai_line, wait_until
from workers.process import start

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider for this test process (OpenTelemetry allows one per process)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    yield spans
    spans.clear()


def test_a_request_that_failed_over_once_is_one_trace(
    redis_url: str, exporter: InMemorySpanExporter
) -> None:
    config = parse_config(
        {
            "endpoints": {
                "primary": {"provider": "mock", "fault_rates": {"server_error": 1.0}},
                "secondary": {
                    "provider": "mock",
                    "usage": {"input_tokens": 11, "output_tokens": 7},
                },
            },
            "routes": {"default": ["primary", "secondary"]},
            "policy": {"retries_per_endpoint": 0},
        }
    )
    worker = start(Settings(redis_url=redis_url), config, concurrency=4)
    try:
        with Client(redis_url, config=config) as client:
            batch_id = client.submit_many([openai_line("t-1", "hello")]).batch_id
            wait_until(lambda: client.batch(batch_id).finished, 30, "the batch")
            (_, _, result), *_ = client.iter_results(batch_id)
    finally:
        worker.stop(grace_s=5)
    assert result.status == "succeeded" and result.endpoint == "secondary"
    assert result.trace_id is not None
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and f"{s.context.trace_id:032x}" == result.trace_id
    ]
    by_kind: dict[str, list[str]] = {}
    for span in spans:
        by_kind.setdefault(span.kind.name, []).append(span.name)
    assert by_kind == {
        "PRODUCER": ["send llm.primary"],
        "CONSUMER": ["process llm.primary", "process llm.secondary"],
        "CLIENT": ["chat m", "chat m"],
    }
    calls = sorted((s for s in spans if s.kind.name == "CLIENT"), key=lambda s: s.start_time or 0)
    failed, ok = (dict(s.attributes or {}) for s in calls)
    assert failed["gen_ai.system"] == "mock" and failed["gen_ai.request.model"] == "m"
    assert failed["batchyard.endpoint"] == "primary" and failed["error.type"] == "server_error"
    assert ok["batchyard.endpoint"] == "secondary"
    assert ok["gen_ai.response.model"] == "m"
    assert (ok["gen_ai.usage.input_tokens"], ok["gen_ai.usage.output_tokens"]) == (11, 7)
    assert "gen_ai.input.messages" not in ok, "prompts stay out of spans unless enabled"
