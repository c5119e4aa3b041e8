"""How the fake server rations itself like a real provider: buckets, outages, a concurrency cap.

OpenAI and Anthropic both enforce RPM and TPM as token buckets: full at start, refilled
continuously, the `*-reset` headers saying when the bucket is full again. Local servers (vLLM,
llama.cpp) announce nothing and answer 503 once they are saturated. An outage answers 429 to
everything for a while. `ServerLimits` holds all of that plus the counters tests and benchmarks
read: requests seen, 429s, 503s, requests in flight over time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from providers.fake_server.faults import SlidingWindow, WindowState

#: "bucket": a token bucket per limit, as OpenAI and Anthropic document theirs; "window": a
#: sliding window (at most the limit in any `window_s`).
Algorithm = Literal["bucket", "window"]
#: Which rate-limit headers every answer carries: the wire's own vendor's, a named vendor's
#: (a proxy that passes another vendor's headers through), or none.
HeaderFormat = Literal["wire", "openai", "anthropic", "none"]


class TokenBucket:
    """`limit` units, full at start, refilled continuously at `limit` per `period_s`."""

    def __init__(self, limit: int, period_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.rate_per_s = limit / period_s
        self.clock = clock
        self._level = float(limit)
        self._at = clock()

    def level(self) -> float:
        """Units available now."""
        now = self.clock()
        self._level = min(self.limit, self._level + (now - self._at) * self.rate_per_s)
        self._at = now
        return self._level

    def wait_s(self, amount: int) -> float:
        """Seconds until `amount` fits (0 now; `math.inf` if it never can)."""
        if amount > self.limit:
            return math.inf
        return max(0.0, (amount - self.level()) / self.rate_per_s)

    def take(self, amount: int) -> None:
        """Spend `amount` (call `wait_s` first)."""
        self._level = self.level() - amount

    def full_in_s(self) -> float:
        """Seconds until the bucket is full again: what `x-ratelimit-reset-*` announces."""
        return (self.limit - self.level()) / self.rate_per_s


class TokenBuckets:
    """RPM and TPM as two token buckets: a request must fit both, and is charged to both."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        period_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests = TokenBucket(rpm, period_s, clock) if rpm is not None else None
        self.tokens = TokenBucket(tpm, period_s, clock) if tpm is not None else None

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.requests is not None or self.tokens is not None

    def admit(self, tokens: int) -> float | None:
        """Charge the request and return None, or return the seconds until it would fit."""
        wait = max(
            self.requests.wait_s(1) if self.requests is not None else 0.0,
            self.tokens.wait_s(tokens) if self.tokens is not None else 0.0,
        )
        if wait > 0:
            return min(wait, 24 * 3600.0)
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(tokens)
        return None

    def state(self) -> WindowState:
        """What the limit headers announce: limits, whole units left, time until full."""
        r, t = self.requests, self.tokens
        return WindowState(
            limit_requests=r.limit if r is not None else None,
            limit_tokens=t.limit if t is not None else None,
            remaining_requests=max(0, math.floor(r.level())) if r is not None else None,
            remaining_tokens=max(0, math.floor(t.level())) if t is not None else None,
            reset_requests_s=r.full_in_s() if r is not None else None,
            reset_tokens_s=t.full_in_s() if t is not None else None,
        )


@dataclass
class Outage:
    """429 with `retry-after: retry_after_s` to every request for `duration_s`, then recovery.

    The clock starts with the first request that meets it (`started_at` None until then), so
    a test or benchmark need not time its start.
    """

    duration_s: float
    retry_after_s: float = 20.0
    started_at: float | None = None

    def active(self, now: float) -> bool:
        """Whether a request arriving `now` is refused (starts the outage if it has not)."""
        if self.started_at is None:
            self.started_at = now
        return now < self.started_at + self.duration_s


@dataclass
class Refusal:
    """Why the server refuses a request before serving it."""

    #: "limit" (enforced RPM/TPM: 429), "outage" (429), "busy" (over the concurrency cap: 503).
    kind: Literal["limit", "outage", "busy"]
    retry_after_s: float | None = None


@dataclass
class LimitStats:
    """Counters a test or benchmark reads while the server runs (chat requests only)."""

    #: Chat requests that arrived.
    seen: int = 0
    #: 429s for an enforced limit, and 429s of an outage (its probes).
    limited: int = 0
    outage_refused: int = 0
    #: 503s for requests over the concurrency cap.
    busy: int = 0
    #: Requests being served now, and the most at once.
    in_flight: int = 0
    max_in_flight: int = 0
    #: (time.time(), in_flight) after each change, for "how many in flight over time".
    timeline: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=1_000_000))

    def enter(self) -> None:
        """A request is being served."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.timeline.append((time.time(), self.in_flight))

    def leave(self) -> None:
        """A request has been answered (or abandoned)."""
        self.in_flight -= 1
        self.timeline.append((time.time(), self.in_flight))

    def mean_in_flight(self, since: float, until: float) -> float:
        """Time-weighted mean of requests in flight between two `time.time()` moments."""
        if until <= since:
            return 0.0
        level, area, last = 0, 0.0, since
        for t, n in self.timeline:
            if t > until:
                break
            if t > since:
                area += level * (t - last)
                last = t
            level = n
        area += level * (until - last)
        return area / (until - since)


def max_in_window(times: Iterable[float], window_s: float) -> int:
    """The most events in any `window_s`-long window (half-open), for sliding-window checks."""
    best, q = 0, deque[float]()
    for t in sorted(times):
        q.append(t)
        while q[0] <= t - window_s:
            q.popleft()
        best = max(best, len(q))
    return best


class ServerLimits:
    """Everything that can refuse a request before the fake server serves it, in the order a
    real deployment applies it: concurrency (the process is saturated: 503, no headers), an
    outage (429 + retry-after), then the RPM/TPM limits (429 + retry-after + limit headers)."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        algorithm: Algorithm = "bucket",
        window_s: float = 60.0,
        headers: HeaderFormat = "wire",
        max_in_flight: int | None = None,
        outage: Outage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enforced: SlidingWindow | TokenBuckets = (
            TokenBuckets(rpm, tpm, window_s, clock)
            if algorithm == "bucket"
            else SlidingWindow(rpm, tpm, window_s, clock)
        )
        self.headers = headers
        self.max_in_flight = max_in_flight
        self.outage = outage
        self.clock = clock
        self.stats = LimitStats()

    @property
    def enabled(self) -> bool:
        """Whether RPM or TPM is enforced."""
        return self.enforced.enabled

    def start_outage(self, duration_s: float, retry_after_s: float = 20.0) -> None:
        """Refuse everything from now on for `duration_s` (429, `retry-after: retry_after_s`)."""
        self.outage = Outage(duration_s, retry_after_s, started_at=self.clock())

    def busy(self) -> Refusal | None:
        """A 503 when the concurrency cap is reached; checked as the request arrives."""
        self.stats.seen += 1
        if self.max_in_flight is not None and self.stats.in_flight >= self.max_in_flight:
            self.stats.busy += 1
            return Refusal("busy")
        return None

    def refuse(self, tokens: int) -> Refusal | None:
        """An outage's 429 or an enforced limit's 429; None (and the request charged) if
        it may be served."""
        if self.outage is not None and self.outage.active(self.clock()):
            self.stats.outage_refused += 1
            return Refusal("outage", self.outage.retry_after_s)
        wait_s = self.enforced.admit(tokens)
        if wait_s is not None:
            self.stats.limited += 1
            return Refusal("limit", wait_s)
        return None

    def state(self) -> WindowState | None:
        """What the limit headers say now, or None when none are announced."""
        if self.headers == "none" or not self.enforced.enabled:
            return None
        return self.enforced.state()
