"""A batching span processor that slows span producers down instead of dropping their spans.

The SDK's `BatchSpanProcessor` drops every span that finds its queue (2,048) full. A submit
of 20,000 lines makes producer spans at ~22,000/s while one exporter thread ships ~7,000/s
over OTLP/HTTP, so about two thirds of them were lost (measured in the report,
notes/traces.md). Tracing here is opted into per process, and a trace per request is what it
is for: while the collector accepts exports, a thread that ends a span on a full queue
waits for room (at most `max_wait_s` each time), so producers and workers run at the speed
the collector takes. When exports fail, or room does not come in time, it drops like the
SDK (counting and logging it), so a collector outage never stalls the batch system; the
next successful export turns waiting back on.

Imported only by `workers.tracing.setup_tracing`, i.e. only when tracing is configured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("batchyard.tracing")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw.strip() else default
    except ValueError:
        log.warning("%s=%r is not an integer: using %d", name, raw, default)
        return default
    return value if value > 0 else default


class WaitingBatchProcessor(SpanProcessor):
    """Queue finished spans, export them in batches on one thread; wait rather than drop.

    Sizes follow the SDK's `OTEL_BSP_*` variables (queue 2,048, batches of 512, a 5 s
    schedule delay, a 30 s export timeout).
    """

    def __init__(self, exporter: SpanExporter, *, max_wait_s: float = 2.0) -> None:
        self.exporter = exporter
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch_size = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.delay_s = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.export_timeout_s = _env_int("OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000
        self.max_wait_s = max_wait_s
        self.dropped = 0
        self.exported = 0
        self._queue: deque[ReadableSpan] = deque()
        self._cond = threading.Condition()
        self._exporting = 0  # spans taken off the queue and not yet exported
        self._flushes = 0  # flush requests not yet served
        self._healthy = True
        self._closed = False
        self._pid = os.getpid()
        self._thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="batchyard-span-export", daemon=True)
        thread.start()
        return thread

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span; on a full queue wait for room while exports succeed."""
        if not span.context or not span.context.trace_flags.sampled:
            return
        if self._pid != os.getpid():  # forked: the export thread did not come along
            self._after_fork()
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.max_queue and self._healthy:
                self._cond.notify_all()
                if not self._cond.wait_for(
                    lambda: len(self._queue) < self.max_queue or self._closed, self.max_wait_s
                ):
                    self._healthy = False
                    log.warning(
                        "span export is slower than spans are made: dropping spans until an "
                        "export succeeds (waited %.0fs for room)",
                        self.max_wait_s,
                    )
            if len(self._queue) >= self.max_queue or self._closed:
                self._drop()
                return
            self._queue.append(span)
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()

    def _drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 10_000 == 0:
            log.warning("span export queue full: %d span(s) dropped so far", self.dropped)

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue.clear()
        self._exporting = 0
        self._thread = self._start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._closed or self._flushes > 0 or len(self._queue) >= self.batch_size
                    ),
                    self.delay_s,
                )
                batch = [
                    self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))
                ]
                self._exporting = len(batch)
                if not batch and self._flushes:
                    self._flushes = 0
                self._cond.notify_all()  # room for waiting producers, news for flushers
                if self._closed and not self._healthy:  # do not hold up an exit for it
                    self.dropped += len(self._queue) + len(batch)
                    self._queue.clear()
                    self._exporting = 0
                    self._cond.notify_all()
                    return
                if not batch and self._closed:
                    return
            if batch:
                self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            ok = self.exporter.export(batch) is SpanExportResult.SUCCESS
        except Exception:
            log.exception("span export failed")
            ok = False
        with self._cond:
            self._exporting = 0
            if ok:
                self.exported += len(batch)
            else:
                self.dropped += len(batch)
            if ok and not self._healthy:
                log.info("span export recovered: waiting for room again instead of dropping")
            self._healthy = ok
            self._cond.notify_all()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every queued span; False if that did not happen within the timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            if self._pid != os.getpid() or not self._thread.is_alive():
                return not self._queue
            self._flushes += 1
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._queue and not self._exporting,
                max(0.0, deadline - time.monotonic()),
            )

    def shutdown(self) -> None:
        """Export what is queued (within the export timeout), then stop the exporter."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(self.export_timeout_s)
        self.exporter.shutdown()
        if self.dropped:
            log.warning("%d span(s) were dropped, %d exported", self.dropped, self.exported)
