"""What executing a job can lead to, and the small helpers that turn answers into records."""

from __future__ import annotations

from dataclasses import dataclass

from providers.base import Provider, ProviderResponse
from providers.errors import ProviderError
from providers.headers import RateLimits
from schemas.config import Price
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
    """Latency, tokens and cost of a successful call, for /metrics."""
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


def learned_limits(resp: ProviderResponse) -> tuple[int, int]:
    """(rpm, tpm) the provider announced in its headers, 0 where it said nothing."""
    limits = resp.rate_limits
    if limits is None:
        return 0, 0
    return limits.requests.limit or 0, limits.tokens.limit or 0


#: (limit, remaining, reset ms) of the request bucket, then of the token bucket; -1 unknown.
Observed = tuple[float, float, float, float, float, float]
NOTHING_OBSERVED: Observed = (-1, -1, -1, -1, -1, -1)


def observed(limits: RateLimits | None) -> Observed:
    """What an answer's headers say of the provider's buckets, for the shared limiter."""
    if limits is None:
        return NOTHING_OBSERVED

    def v(x: float | None, scale: float = 1.0) -> float:
        return -1 if x is None else x * scale

    requests, tokens = limits.requests, limits.tokens
    return (
        v(requests.limit),
        v(requests.remaining),
        v(requests.reset_s, 1000),
        v(tokens.limit),
        v(tokens.remaining),
        v(tokens.reset_s, 1000),
    )
