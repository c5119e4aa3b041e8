"""The sampler `OTEL_TRACES_SAMPLER[_ARG]` asks for, on OpenTelemetry's SDK.

Apart from `workers.tracing` because the SDK is imported only where tracing is set up: a
process that does not trace (the common case: `batchyard run`, workers without an exporter)
skips its import, ~30-40 ms of CPU per process on this machine (#22).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState

log = logging.getLogger("batchyard.tracing")


def env_sampler() -> Sampler | None:
    """The sampler `OTEL_TRACES_SAMPLER[_ARG]` names (None for `always_off`), except that a
    parent-based one makes a fresh decision for an unsampled remote parent.

    A job's traceparent says "not sampled" when its producer did not trace at all (the
    submit CLI without OTEL variables, a client library in someone's app): honouring that
    would leave a tracing worker with nothing to record. The worker's own root sampler
    decides instead, under the job's trace id, so the spans still form the request's trace.
    A remote parent that *is* sampled is still followed.
    """
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name == "always_off":
        return None
    if name == "always_on":
        return ALWAYS_ON
    if name == "traceidratio":
        return TraceIdRatio(_sampler_ratio())
    roots: dict[str, Callable[[], Sampler]] = {
        "parentbased_always_on": lambda: ALWAYS_ON,
        "parentbased_always_off": lambda: ALWAYS_OFF,
        "parentbased_traceidratio": lambda: TraceIdRatio(_sampler_ratio()),
    }
    if name not in roots:
        log.warning("unknown OTEL_TRACES_SAMPLER %r: using parentbased_always_on", name)
        name = "parentbased_always_on"
    root = roots[name]()
    return ParentBased(root, remote_parent_not_sampled=root)


def _sampler_ratio() -> float:
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio in [0, 1]: using 1.0", raw)
        return 1.0
    return ratio


class TraceIdRatio(TraceIdRatioBased):
    """`TraceIdRatioBased` over a mix of all 128 bits of the trace id.

    The SDK's compares the low 64 bits with the bound. Trace ids a non-tracing producer
    writes are a per-chunk random prefix plus a counter (see `enqueue_context`), so those
    bits barely differ within a chunk: whole chunks would be in or out together. Mixing
    (splitmix64's finaliser) keeps the decision a pure function of the trace id, the same in
    every process, but spreads it evenly over requests.
    """

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return super().should_sample(
            parent_context, _mix(trace_id), name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"BatchyardTraceIdRatio{{{self.rate}}}"


def _mix(trace_id: int) -> int:
    mask = (1 << 64) - 1
    z = ((trace_id >> 64) ^ trace_id) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)
