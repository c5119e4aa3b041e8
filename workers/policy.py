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
