"""Which attempts use up a request's budget, and how a long wait keeps its list short (#17)."""

from __future__ import annotations

from providers.errors import Overloaded, RateLimited
from schemas.config import PolicyConfig
from schemas.result import Attempt
from workers.policy import KEPT_BACKPRESSURE, backpressure_s, charged, compact, waited


def att(error: str | None) -> Attempt:
    return Attempt(endpoint="e", error=error)


def test_backpressure_attempts_are_not_charged_to_the_budget() -> None:
    attempts = [att(e) for e in ("rate_limited", "server_error", "overloaded", "timeout", None)]
    assert charged(attempts) == 2  # the server error and the success
    assert waited([att("server_error"), att("rate_limited"), att("timeout")]) == 2


def test_a_long_wait_keeps_only_the_newest_backpressure_attempts() -> None:
    attempts = [att("server_error"), *(att("rate_limited") for _ in range(100)), att("timeout")]
    compact(attempts)
    assert len(attempts) == 1 + KEPT_BACKPRESSURE
    assert attempts[0].error == "server_error" and attempts[-1].error == "timeout"


def test_the_wait_is_the_servers_retry_after_else_bounded_jitter() -> None:
    policy = PolicyConfig(backoff_base_s=1, backoff_max_s=4)
    assert backpressure_s(policy, [], RateLimited("x", retry_after_s=20)) == 20
    for _ in range(50):
        assert 0 <= backpressure_s(policy, [att("overloaded")] * 10, Overloaded("x")) <= 4
