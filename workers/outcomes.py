"""What executing a job can lead to, and the small helpers that turn answers into records."""

from __future__ import annotations

import math
from dataclasses import dataclass

from providers.base import Provider, ProviderResponse
from providers.errors import ProviderError
from providers.headers import RateLimits
from schemas import vectors
from schemas.config import Price
from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import LLMResult, Timings
from schemas.trusted import trusted
from workers import metrics


class CircuitOpen(ProviderError, code="circuit_open", before_call=True):
    """The endpoint's shared breaker is open: do not call it now."""

    def __init__(self, endpoint: str, retry_in_s: float) -> None:
        super().__init__(f"circuit breaker of {endpoint!r} is open")
        self.retry_in_s = retry_in_s


class BatchCancelled(Exception):
    """The request's batch was cancelled while it waited to be sent: no call is made."""


@dataclass
class Move:
    """The job goes back on a queue: its (possibly advanced) hop, after `delay_ms`."""

    delay_ms: int = 0


def record_success(provider: Provider, resp: ProviderResponse, latency_ms: float) -> None:
    """Latency, tokens and cost of a successful call, for /metrics (when it is served)."""
    if not metrics.RECORDING:
        return
    name = provider.endpoint
    metrics.labeled(metrics.LATENCY, name).observe(latency_ms / 1000)
    metrics.labeled(metrics.TOKENS, name, "input").inc(resp.usage.input_tokens)
    metrics.labeled(metrics.TOKENS, name, "output").inc(resp.usage.output_tokens)
    cost = cost_of(provider.settings.price_for(resp.model), resp)
    if cost:
        metrics.labeled(metrics.COST, name).inc(cost)


def cost_of(price: Price | None, resp: ProviderResponse) -> float | None:
    """USD of one answer, or None without a price."""
    if price is None:
        return None
    u = resp.usage
    return price.cost(u.input_tokens, u.output_tokens, u.cached_tokens)


#: The fields `succeeded` sets: `model_fields_set` as `LLMResult(...)` with them leaves it.
_SUCCEEDED_SET = frozenset(LLMResult.model_fields) - {"timings", "trace_id", "error", "extra"}


def succeeded(job: Job, req: LLMRequest, resp: ProviderResponse, cost: float | None) -> LLMResult:
    """The result of an answer: its normalised fields, and its body with vectors packed.

    Every value comes from a validated model (the answer, the job, the request), so the result
    is not validated again: that was ~4 µs of ~5 per result (#22). The lists and dicts are
    copied, as validation copies them. `tests/unit/test_result_json.py` compares it with the
    validated result, byte for byte.
    """
    body, fmt = resp.body, None
    if body is not None and req.kind == "embeddings":
        body, fmt = vectors.pack(body)
    texts = req.kind not in ("embeddings", "moderations")
    calls = resp.tool_calls
    fields = {
        "custom_id": req.custom_id,
        "batch_id": job.batch_id,
        "status": "succeeded",
        "kind": req.kind,
        "output": resp.text if texts else None,
        "tool_calls": None if calls is None else [dict(c) for c in calls],
        "finish_reason": resp.finish_reason,
        "body": None if body is None else dict(body),
        "vectors": fmt,
        "endpoint": job.current.endpoint,
        "model": resp.model,
        "request_id": resp.request_id,
        "usage": resp.usage,
        "cost_usd": cost,
        "attempts": list(job.attempts),
        "timings": trusted(Timings, _NO_TIMES.copy(), set()),
        "trace_id": None,
        "error": None,
        "extra": {},
    }
    return trusted(LLMResult, fields, set(_SUCCEEDED_SET))


_NO_TIMES: dict[str, float | None] = dict.fromkeys(Timings.model_fields)


def learned_limits(resp: ProviderResponse) -> tuple[int, int]:
    """(rpm, tpm) the provider announced in its headers, 0 where it said nothing."""
    limits = resp.rate_limits
    if limits is None:
        return 0, 0
    return limits.requests.limit or 0, limits.tokens.limit or 0


#: (limit, remaining, reset ms) of the request bucket, then of the token bucket; -1 unknown.
#: Whole numbers: the limiter writes them into every release's words, and a float's repr cost
#: ~1 us a word more than an int's there (#22).
Observed = tuple[int, int, int, int, int, int]
NOTHING_OBSERVED: Observed = (-1, -1, -1, -1, -1, -1)


def _count(x: int | None) -> int:
    return -1 if x is None else x


def _reset_ms(reset_s: float | None) -> int:
    """A reset in whole ms, rounded up: one announced as due still counts as not yet."""
    return -1 if reset_s is None else math.ceil(reset_s * 1000)


def observed(limits: RateLimits | None) -> Observed:
    """What an answer's headers say of the provider's buckets, for the shared limiter."""
    if limits is None:
        return NOTHING_OBSERVED
    requests, tokens = limits.requests, limits.tokens
    return (
        _count(requests.limit),
        _count(requests.remaining),
        _reset_ms(requests.reset_s),
        _count(tokens.limit),
        _count(tokens.remaining),
        _reset_ms(tokens.reset_s),
    )
