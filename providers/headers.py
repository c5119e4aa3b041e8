"""Rate-limit and Retry-After headers as OpenAI, Anthropic and HTTP itself write them.

- OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; resets are Go durations
  ("6m0s", "1.5s", "20ms") until the bucket is back to its initial (full) state. Azure OpenAI
  writes the same names with plain seconds.
- Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
  reset}`; resets are RFC 3339 timestamps of when the bucket is fully replenished; `tokens` is
  the most restrictive token limit in effect.
- HTTP: `retry-after` is delay-seconds or an HTTP-date (RFC 9110 §10.2.3); `retry-after-ms`
  (OpenAI, Azure) is milliseconds and is preferred when both are sent, as the vendors' SDKs do.

A value that is not what its vendor documents (negative, not a number, a date without a zone)
is ignored with a debug log: a proxy's odd header must never stop a request.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("batchyard.providers.headers")

_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
#: A bare reset number this large is a Unix timestamp (GitHub style), not a delay in seconds.
_EPOCH_S = 1e9
_SHOWN_CHARS = 60


class Limit(NamedTuple):
    """One announced limit: its size, what is left of it, and seconds until it is full again."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None


_NONE = Limit()


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


def _ignored(name: str, value: str) -> None:
    shown = value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"
    log.debug("ignoring header %s: %r is not a value its vendor documents", name, shown)


def _until_s(text: str, now_s: float, *, http_date: bool) -> float | None:
    """Seconds from now until an RFC 3339 timestamp or (with `http_date`) an HTTP-date;
    never negative; None for text that is neither or has no time zone."""
    text = text.strip()
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        if http_date:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:  # asctime-date: HTTP-dates are always GMT
                when = when.replace(tzinfo=UTC)
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_s)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What an endpoint announced in `x-ratelimit-*` or `anthropic-ratelimit-*` headers.

    `tokens` is the combined token limit (OpenAI's only one; Anthropic's `tokens` family, the
    most restrictive in effect, or its input family when `tokens` is absent); Anthropic's
    separate input and output limits are kept as well. Resets are seconds from the response
    until the bucket is full again. Values the server did not send, or sent garbled, are None.
    """

    requests: Limit = _NONE
    tokens: Limit = _NONE
    input_tokens: Limit = _NONE
    output_tokens: Limit = _NONE

    @property
    def families(self) -> tuple[Limit, Limit, Limit, Limit]:
        """Requests, tokens, input tokens, output tokens."""
        return self.requests, self.tokens, self.input_tokens, self.output_tokens

    def __bool__(self) -> bool:
        return any(family != _NONE for family in self.families)

    def wait_s(self) -> float | None:
        """How long until the exhausted limit resets (the longest of the known ones if unsure)."""
        resets = [(f.remaining, f.reset_s) for f in self.families if f.reset_s is not None]
        exhausted = [reset for left, reset in resets if left == 0]
        return max(exhausted or [reset for _, reset in resets], default=None)


_NO_LIMITS = RateLimits()


class _Reader:
    """Reads one response's headers, logging (at debug) every value it has to ignore."""

    def __init__(self, headers: Mapping[str, str], now_s: float) -> None:
        self.h = _case_blind(headers)
        self.now_s = now_s

    def count(self, name: str) -> int | None:
        raw = self.h.get(name)
        if raw is None:
            return None
        value = _number(raw)
        if value is None:
            _ignored(name, raw)
            return None
        return int(value)

    def reset_s(self, name: str) -> float | None:
        """OpenAI writes resets as durations (Azure as seconds), Anthropic as RFC 3339."""
        raw = self.h.get(name)
        if raw is None:
            return None
        seconds = parse_duration_s(raw)
        if seconds is not None and seconds >= _EPOCH_S:
            seconds = max(0.0, seconds - self.now_s)
        if seconds is None:
            seconds = _until_s(raw, self.now_s, http_date=False)
        if seconds is None:
            _ignored(name, raw)
        return seconds

    def family(self, prefix: str, kind: str) -> Limit:
        """One limit, e.g. prefix "x-ratelimit-", kind "tokens"."""
        if prefix.startswith("x-"):
            names = (f"{prefix}limit-{kind}", f"{prefix}remaining-{kind}", f"{prefix}reset-{kind}")
        else:
            names = (f"{prefix}{kind}-limit", f"{prefix}{kind}-remaining", f"{prefix}{kind}-reset")
        return Limit(self.count(names[0]), self.count(names[1]), self.reset_s(names[2]))


def _case_blind(headers: Mapping[str, str]) -> CIMultiDict[str] | CIMultiDictProxy[str]:
    """The headers with case-insensitive lookups; a response's own are used as they are (a
    copy of them was a step of every call, #22)."""
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        return headers
    return CIMultiDict(headers)


def rate_limits(headers: Mapping[str, str], *, now_s: float | None = None) -> RateLimits:
    """Read the limit headers of any response; fields the server did not send stay None."""
    # Nothing to read, the common case of servers without limits: told by one look at all
    # the names at once (a quarter of the cost of the look at each name below, #22).
    if "ratelimit-" not in "\n".join(headers).lower():
        return _NO_LIMITS
    names = [k.lower() for k in headers]
    if not any(k.startswith(("x-ratelimit-", "anthropic-ratelimit-")) for k in names):
        return _NO_LIMITS
    r = _Reader(headers, time.time() if now_s is None else now_s)
    if any(k.startswith("anthropic-ratelimit-") for k in names):
        p = "anthropic-ratelimit-"
        requests = r.family(p, "requests")
        inputs = r.family(p, "input-tokens")
        outputs = r.family(p, "output-tokens")
        tokens = r.family(p, "tokens")
        if tokens == _NONE:
            tokens = inputs
        return RateLimits(requests, tokens, inputs, outputs)
    return RateLimits(r.family("x-ratelimit-", "requests"), r.family("x-ratelimit-", "tokens"))


def retry_after_s(headers: Mapping[str, str], *, now_s: float | None = None) -> float | None:
    """How long the server asks us to wait: retry-after-ms, retry-after, else the limit resets."""
    h = _case_blind(headers)
    now = time.time() if now_s is None else now_s
    raw_ms = h.get("retry-after-ms")
    if raw_ms is not None:
        ms = _number(raw_ms)
        if ms is not None:
            return ms / 1000
        _ignored("retry-after-ms", raw_ms)
    raw = h.get("retry-after")
    if raw is not None:
        seconds = _number(raw)
        if seconds is None:
            seconds = _until_s(raw, now, http_date=True)
        if seconds is not None:
            return seconds
        _ignored("retry-after", raw)
    return rate_limits(h, now_s=now).wait_s()
