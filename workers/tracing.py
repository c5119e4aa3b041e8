"""OpenTelemetry tracing: one request is one trace, across the queue and failover hops.

Every job carries a W3C `traceparent` in its payload. With an exporter configured
(`OTEL_EXPORTER_OTLP_ENDPOINT`) the producer opens a span per request and workers add a
consumer span per execution and a client span per provider call (GenAI semantic
conventions). Without one, jobs still get a random trace id so results can be correlated,
and spans cost nothing.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("batchyard.tracing")
_PROPAGATOR = TraceContextTextMapPropagator()
_rng = random.Random()
#: Prompts and outputs go into spans only when this is set (they may hold personal data).
CAPTURE_CONTENT = os.environ.get("BATCHYARD_TRACE_CONTENT", "").lower() in ("1", "true", "yes")


def setup_tracing(service_name: str) -> bool:
    """Install an OTLP/HTTP-exporting tracer provider when the environment asks for one.

    Every entry point calls this (CLI commands, the gateway, worker processes); it returns
    whether spans are now recorded. It reads the standard variables as the SDK does:
    `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off; an
    `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` (or `OTEL_TRACES_EXPORTER=otlp`) turns it on;
    `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    `OTEL_BSP_*` and the exporter's own `OTEL_EXPORTER_OTLP_*` apply; spans are batched by
    `WaitingBatchProcessor`, which slows span makers down rather than dropping spans while
    the collector keeps up. Without any of them no exporter is imported, no provider is
    installed, and spans stay no-ops.
    """
    if trace_enabled():
        return True
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    exporters.discard("")
    if "none" in exporters:
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    # An explicit OTEL_TRACES_EXPORTER list wins; unset, an endpoint means OTLP.
    use_otlp = "otlp" in exporters or (not exporters and bool(endpoint))
    use_console = "console" in exporters
    if unknown := exporters - {"otlp", "console"}:
        log.warning("OTEL_TRACES_EXPORTER %s not supported (otlp, console, none)", unknown)
    if not (use_otlp or use_console):
        return False
    from workers.sampling import env_sampler

    sampler = env_sampler()
    if sampler is None:  # always_off: nothing would ever be recorded
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from workers.span_export import WaitingBatchProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = TracerProvider(resource=resource, sampler=sampler)
    chosen: list[SpanExporter] = []
    if use_otlp:
        _warn_protocol(env)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen.append(OTLPSpanExporter())
    if use_console:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        chosen.append(ConsoleSpanExporter())
    for exporter in chosen:
        provider.add_span_processor(WaitingBatchProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _warn_protocol(env: Mapping[str, str]) -> None:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip().lower() != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: exporting over http/protobuf",
            protocol,
        )


def flush_tracing(timeout_s: float = 10.0) -> None:
    """Export every finished span now (a no-op when tracing is off)."""
    if trace_enabled():
        from opentelemetry.sdk.trace import TracerProvider

        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.force_flush(int(timeout_s * 1000))


def shutdown_tracing() -> None:
    """Flush and stop the exporter: the SIGTERM path of every long-running process.

    The SDK also does this at interpreter exit, but a process that is killed after its
    grace, or exits through `os._exit`, would lose what was still batched.
    """
    if trace_enabled():
        from opentelemetry.sdk.trace import TracerProvider

        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.shutdown()


def trace_enabled() -> bool:
    """Whether an SDK tracer provider (one that records spans) is installed.

    None without the SDK imported. Reads OpenTelemetry's global directly:
    `get_tracer_provider()` consults the environment on every call, which showed up in a
    worker's profile at a few thousand jobs a second.
    """
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    if sdk is None:  # the SDK is imported where a provider is installed (`setup_tracing`)
        return False
    if hasattr(trace, "_TRACER_PROVIDER"):
        return isinstance(trace._TRACER_PROVIDER, sdk.TracerProvider)
    return isinstance(trace.get_tracer_provider(), sdk.TracerProvider)


_tracer: tuple[object, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """batchyard's tracer (a no-op one until a provider is installed).

    Kept per provider: `get_tracer` builds a new tracer and instrumentation scope on every
    call, a third of the cost of a traced job's two spans (26 us a job without export).
    """
    global _tracer
    provider = getattr(trace, "_TRACER_PROVIDER", None)
    cached = _tracer
    if cached is not None and provider is not None and cached[0] is provider:
        return cached[1]
    made = trace.get_tracer("batchyard")
    if provider is not None:
        _tracer = (provider, made)
    return made


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
    endpoint: str,
    batch_id: str,
    link: trace.SpanContext | None,
    *,
    unique: str | None = None,
    enabled: bool | None = None,
) -> dict[str, str]:
    """Trace context for one enqueued request: a producer span when tracing is on.

    `unique`, 32 hex digits from a uuid4 (its version digit makes any 16 of them from the
    8th on non-zero), is used as the trace id when tracing is off: a producer already has
    one per message, and it saves drawing random numbers on the submit path. `enabled` is
    `trace_enabled()` when the caller asked it already (once per chunk, not per line).
    """
    if not (trace_enabled() if enabled is None else enabled):
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
