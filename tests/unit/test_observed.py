"""What an answer's limit headers say, as the shared limiter is told it."""

from __future__ import annotations

from providers.headers import Limit, RateLimits, rate_limits
from workers.outcomes import NOTHING_OBSERVED, observed


def test_the_limiter_is_told_whole_numbers_with_resets_in_ms_rounded_up() -> None:
    # OpenAI's headers: counts as sent, resets as durations ("6ms", "1.0004s").
    headers = {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "1000000",
        "x-ratelimit-remaining-tokens": "999000",
        "x-ratelimit-reset-tokens": "1.0004s",
    }
    seen = observed(rate_limits(headers))
    assert seen == (10000, 9999, 6, 1000000, 999000, 1001)
    assert all(type(v) is int for v in seen)  # words of the release as ints, not floats
    # what a header left out stays unknown (-1); no limits at all is nothing observed
    assert observed(RateLimits(Limit(60, None, 0.0001))) == (60, -1, 1, -1, -1, -1)
    assert observed(None) is NOTHING_OBSERVED
