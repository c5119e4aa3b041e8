"""OpenTelemetry tracing: one request is one trace, across the queue and failover hops.

Every job carries a W3C `traceparent` in its payload. With an exporter configured
(`OTEL_EXPORTER_OTLP_ENDPOINT`) the producer opens a span per request and workers add a
consumer span per execution and a client span per provider call (GenAI semantic
conventions). Without one, jobs still get a random trace id so results can be correlated,
and spans cost nothing.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_rng = random.Random()
#: Prompts and outputs go into spans only when this is set (they may hold personal data).
CAPTURE_CONTENT = os.environ.get("BATCHYARD_TRACE_CONTENT", "").lower() in ("1", "true", "yes")


def setup_tracing(service_name: str) -> bool:
    """Export spans over OTLP/HTTP when an endpoint is configured; returns whether it is on."""
    if trace_enabled():
        return True
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def trace_enabled() -> bool:
    """Whether an SDK tracer provider (one that records spans) is installed.

    Reads OpenTelemetry's global directly: `get_tracer_provider()` consults the environment
    on every call, which showed up in a worker's profile at a few thousand jobs a second.
    """
    if hasattr(trace, "_TRACER_PROVIDER"):
        return isinstance(trace._TRACER_PROVIDER, TracerProvider)
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def tracer() -> trace.Tracer:
    """batchyard's tracer (a no-op one until a provider is installed)."""
    return trace.get_tracer("batchyard")


def span(
    name: str,
    *,
    kind: SpanKind,
    attributes: Callable[[], dict[str, Any]] | dict[str, Any] | None = None,
    context: Context | None = None,
) -> AbstractContextManager[trace.Span | None]:
    """A current span when tracing records, else a no-op that costs (almost) nothing."""
    if not trace_enabled():
        return nullcontext()
    attrs = attributes() if callable(attributes) else attributes
    return tracer().start_as_current_span(name, context=context, kind=kind, attributes=attrs)


def random_traceparent() -> dict[str, str]:
    """A fresh, unsampled trace context: correlation ids without exporting anything.

    Trace ids need to be unique, not secret: the process's PRNG (seeded from os.urandom at
    start) is a tenth of the cost of two os.urandom calls per enqueued request.
    """
    return {"traceparent": f"00-{_rng.getrandbits(128):032x}-{_rng.getrandbits(64):016x}-00"}


def extract(carrier: Mapping[str, str]) -> Context:
    """The remote context a job carries."""
    return _PROPAGATOR.extract(dict(carrier))


def trace_id_of(carrier: Mapping[str, str]) -> str | None:
    """The 32-hex trace id in a carrier's traceparent, if any."""
    parts = carrier.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def enqueue_context(
    endpoint: str, batch_id: str, link: trace.SpanContext | None, *, unique: str | None = None
) -> dict[str, str]:
    """Trace context for one enqueued request: a producer span when tracing is on.

    `unique`, 32 hex digits from a uuid4 (its version digit makes any 16 of them from the
    8th on non-zero), is used as the trace id when tracing is off: a producer already has
    one per message, and it saves drawing random numbers on the submit path.
    """
    if not trace_enabled():
        if unique is not None:
            return {"traceparent": f"00-{unique}-{unique[8:24]}-00"}
        return random_traceparent()
    links = [Link(link)] if link is not None else None
    span = tracer().start_span(
        f"send llm.{endpoint}",
        context=Context(),  # a new trace per request
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={
            "messaging.system": "redis",
            "messaging.destination.name": f"llm.{endpoint}",
            "batchyard.batch_id": batch_id,
        },
    )
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    return carrier


#: GenAI semantic-convention operation of each endpoint kind.
OPERATIONS = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "moderations": "moderations",
}


def operation_name(request: Any) -> str:
    """`gen_ai.operation.name` of a request's kind."""
    return OPERATIONS.get(request.kind, "chat")


def genai_request(provider: Any, model: str, request: Any) -> dict[str, Any]:
    """GenAI semantic-convention attributes of a call (no prompt text unless enabled)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(request),
        "gen_ai.system": provider.name,
        "gen_ai.provider.name": provider.name,
        "gen_ai.request.model": model,
        "batchyard.endpoint": provider.endpoint,
        "batchyard.kind": request.kind,
    }
    body = request.body
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    limit = limit or body.get("max_output_tokens")
    if isinstance(limit, int):
        attrs["gen_ai.request.max_tokens"] = limit
    if isinstance(body.get("temperature"), int | float):
        attrs["gen_ai.request.temperature"] = body["temperature"]
    if CAPTURE_CONTENT:
        content = body.get("messages") or body.get("input") or body.get("prompt")
        attrs["gen_ai.input.messages"] = orjson.dumps(content).decode()
    return attrs


def genai_response(span: trace.Span, response: Any) -> None:
    """Response model, usage and finish reason on a chat span."""
    span.set_attribute("gen_ai.response.model", response.model)
    span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
    if response.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
    if response.request_id:
        span.set_attribute("gen_ai.response.id", response.request_id)
    if CAPTURE_CONTENT:
        span.set_attribute("gen_ai.output.messages", response.text)
