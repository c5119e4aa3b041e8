"""Rate-limit and Retry-After headers as OpenAI, Anthropic and HTTP itself write them."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from multidict import CIMultiDict

_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration_s(text: str) -> float | None:
    """Seconds in a Go-style duration ("20ms", "6m0s", "1h2m3.5s") or a bare number of seconds."""
    text = text.strip()
    number = _number(text)
    if number is not None:
        return number
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(value) * _UNIT_S[unit] for value, unit in _DURATION_PART.findall(text))


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _until_s(text: str, now_s: float) -> float | None:
    """Seconds from now until an HTTP-date or RFC 3339 timestamp (never negative)."""
    when: datetime | None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(text.strip())
        except (TypeError, ValueError, IndexError):
            return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_s)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What an endpoint advertised: OpenAI `x-ratelimit-*` or `anthropic-ratelimit-*` headers."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)

    def wait_s(self) -> float | None:
        """How long until the exhausted limit resets (the longest of the known ones if unsure)."""
        pairs = (
            (self.remaining_requests, self.reset_requests_s),
            (self.remaining_tokens, self.reset_tokens_s),
        )
        exhausted = [reset for left, reset in pairs if left == 0 and reset is not None]
        known = exhausted or [reset for _, reset in pairs if reset is not None]
        return max(known) if known else None


def _int(text: str | None) -> int | None:
    value = _number(text)
    return int(value) if value is not None else None


def _reset_s(text: str | None, now_s: float) -> float | None:
    """OpenAI writes resets as durations, Anthropic as RFC 3339 timestamps."""
    if text is None:
        return None
    seconds = parse_duration_s(text)
    return seconds if seconds is not None else _until_s(text, now_s)


def rate_limits(headers: Mapping[str, str], *, now_s: float | None = None) -> RateLimits:
    """Read the limit headers of any response; fields the server did not send stay None."""
    h = CIMultiDict(headers)
    now = time.time() if now_s is None else now_s
    if any(k.lower().startswith("anthropic-ratelimit-") for k in h):
        tokens = "tokens" if "anthropic-ratelimit-tokens-limit" in h else "input-tokens"
        return RateLimits(
            limit_requests=_int(h.get("anthropic-ratelimit-requests-limit")),
            limit_tokens=_int(h.get(f"anthropic-ratelimit-{tokens}-limit")),
            remaining_requests=_int(h.get("anthropic-ratelimit-requests-remaining")),
            remaining_tokens=_int(h.get(f"anthropic-ratelimit-{tokens}-remaining")),
            reset_requests_s=_reset_s(h.get("anthropic-ratelimit-requests-reset"), now),
            reset_tokens_s=_reset_s(h.get(f"anthropic-ratelimit-{tokens}-reset"), now),
        )
    return RateLimits(
        limit_requests=_int(h.get("x-ratelimit-limit-requests")),
        limit_tokens=_int(h.get("x-ratelimit-limit-tokens")),
        remaining_requests=_int(h.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_int(h.get("x-ratelimit-remaining-tokens")),
        reset_requests_s=_reset_s(h.get("x-ratelimit-reset-requests"), now),
        reset_tokens_s=_reset_s(h.get("x-ratelimit-reset-tokens"), now),
    )


def retry_after_s(headers: Mapping[str, str], *, now_s: float | None = None) -> float | None:
    """How long the server asks us to wait: retry-after-ms, retry-after, else the limit resets."""
    h = CIMultiDict(headers)
    now = time.time() if now_s is None else now_s
    ms = _number(h.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    raw = h.get("retry-after")
    if raw:
        seconds = _number(raw)
        if seconds is None:
            seconds = _until_s(raw, now)
        if seconds is not None:
            return seconds
    return rate_limits(h, now_s=now).wait_s()
