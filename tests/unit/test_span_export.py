"""WaitingBatchProcessor: a full queue waits for a working exporter, drops for a failing one."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.conftest import wait_until
from workers.span_export import WaitingBatchProcessor


class Exporter(SpanExporter):
    """Records what it is given; slow (`gate` closed) or failing on demand."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.gate.wait(10)
        if self.fail:
            return SpanExportResult.FAILURE
        self.spans.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()


@pytest.fixture
def small_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")


@pytest.fixture
def exporter(small_queue: None) -> Iterator[tuple[Exporter, WaitingBatchProcessor]]:
    out = Exporter()
    processor = WaitingBatchProcessor(out, max_wait_s=0.5)
    yield out, processor
    out.gate.set()
    processor.shutdown()


def spans(processor: WaitingBatchProcessor, n: int, prefix: str = "s") -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for i in range(n):
        tracer.start_span(f"{prefix}{i}").end()


def test_many_more_spans_than_the_queue_holds_all_reach_the_exporter(
    exporter: tuple[Exporter, WaitingBatchProcessor],
) -> None:
    out, processor = exporter
    spans(processor, 1000)  # 15x the queue, from a thread faster than the exporter
    assert processor.force_flush(10_000)
    assert sorted(out.spans) == sorted(f"s{i}" for i in range(1000))
    assert processor.dropped == 0


def test_a_failing_exporter_makes_it_drop_and_a_working_one_wait_again(
    exporter: tuple[Exporter, WaitingBatchProcessor],
) -> None:
    out, processor = exporter
    # Given a collector that refuses exports,
    out.fail = True
    spans(processor, 200, "lost")
    # the span makers were not held up for good: spans were dropped instead,
    assert processor.dropped > 0
    wait_until(lambda: out.calls > 0, 10, "an export attempt")
    # and once the collector is back and one export succeeds, nothing is dropped any more.
    out.fail = False
    processor.force_flush(10_000)
    dropped = processor.dropped
    spans(processor, 500, "kept")
    assert processor.force_flush(10_000)
    assert processor.dropped == dropped
    assert sum(name.startswith("kept") for name in out.spans) == 500


def test_shutdown_exports_what_is_queued(small_queue: None) -> None:
    out = Exporter()
    processor = WaitingBatchProcessor(out)
    spans(processor, 10)  # fewer than a batch, and no timed export for 10 minutes
    processor.shutdown()
    assert sorted(out.spans) == sorted(f"s{i}" for i in range(10))


def test_shutdown_does_not_wait_on_a_failing_collector_for_what_is_queued(
    small_queue: None,
) -> None:
    out = Exporter()
    processor = WaitingBatchProcessor(out, max_wait_s=0.2)
    out.fail = True
    spans(processor, 16)  # one batch: its export fails, the processor stops waiting
    wait_until(lambda: out.calls > 0 and processor.dropped >= 16, 10, "the failed export")
    spans(processor, 10)
    processor.shutdown()  # returns without retrying the queued spans against a dead collector
    assert out.calls == 1
    assert processor.dropped == 26
