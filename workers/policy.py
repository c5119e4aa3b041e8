"""Retry / failover decisions: backoff with full jitter, Retry-After, and error summaries."""

from __future__ import annotations

import random

from providers.errors import ProviderError, RateLimited
from schemas.config import PolicyConfig
from schemas.result import Attempt, ErrorInfo

#: Errors that say the endpoint is unwell (they move the circuit breaker).
ENDPOINT_FAULTS = {"server_error", "timeout", "overloaded", "protocol_error", "auth_error"}
#: Errors that say nothing about the endpoint's health.
NEUTRAL = {"rate_limited", "insufficient_quota"}
#: Errors that say "not now" rather than "not this request": they never use up a request's
#: attempt budget; the request waits (or fails over) until its batch's window would end.
BACKPRESSURE = frozenset({"rate_limited", "overloaded", "timeout", "circuit_open"})
#: Backpressure attempts kept in a job's list (the oldest go first): a day of waiting on a
#: paused endpoint must not grow the message without bound.
KEPT_BACKPRESSURE = 20


def charged(attempts: list[Attempt]) -> int:
    """The attempts that count against `policy.max_attempts` (backpressure does not)."""
    return sum(a.error not in BACKPRESSURE for a in attempts)


def waited(attempts: list[Attempt]) -> int:
    """How many backpressure answers in a row end the list (for the backoff exponent)."""
    n = 0
    for a in reversed(attempts):
        if a.error not in BACKPRESSURE:
            break
        n += 1
    return n


def compact(attempts: list[Attempt]) -> None:
    """Drop the oldest backpressure attempts beyond `KEPT_BACKPRESSURE`, in place."""
    extra = sum(a.error in BACKPRESSURE for a in attempts) - KEPT_BACKPRESSURE
    if extra <= 0:
        return
    keep: list[Attempt] = []
    for a in attempts:
        if extra > 0 and a.error in BACKPRESSURE:
            extra -= 1
            continue
        keep.append(a)
    attempts[:] = keep


def backpressure_s(policy: PolicyConfig, attempts: list[Attempt], exc: BaseException) -> float:
    """Wait before trying a refused request again: the server's Retry-After, else full jitter
    over the backpressure answers in a row."""
    if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
        return exc.retry_after_s
    retry_in = getattr(exc, "retry_in_s", None)
    if isinstance(retry_in, float | int) and retry_in > 0:
        return float(retry_in)
    return backoff_s(policy, max(1, min(waited(attempts), 30)), None)


def backoff_s(policy: PolicyConfig, retry: int, exc: BaseException | None) -> float:
    """Wait before retry number `retry` (1-based): Retry-After if given, else full jitter."""
    if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
        return exc.retry_after_s
    cap = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (retry - 1))
    return random.uniform(0, cap)


def retry_fits(policy: PolicyConfig, exc: ProviderError) -> bool:
    """Whether to retry on the same endpoint: retryable class and a Retry-After we will wait."""
    if policy.action(exc.code) != "retry":
        return False
    if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
        return exc.retry_after_s <= policy.max_retry_wait_s
    return True


def final_error(attempts: list[Attempt], last: ErrorInfo) -> ErrorInfo:
    """The last cause, with every hop listed, so a user sees the whole story in one line."""
    if len(attempts) <= 1:
        return last
    hops = "; ".join(
        f"{a.endpoint}{'/' + a.model if a.model else ''}: {a.error or 'ok'}" for a in attempts
    )
    return last.model_copy(update={"message": f"{last.message} (attempts: {hops})"})
