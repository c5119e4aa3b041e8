"""What the fake server does to a request: scripted faults, fault rates, and an RPM/TPM window."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal[
    "ok",
    "rate_limited",
    "quota",
    "auth",
    "forbidden",
    "not_found",
    "bad_request",
    "context_length",
    "too_large",
    "content_filter",
    "server_error",
    "bad_gateway",
    "overloaded",
    "unavailable",
    "gateway_timeout",
    "drop",
    "cut",
    "truncate",
    "malformed",
    "raw",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


class Fault(BaseModel):
    """One scripted answer. Vendor-neutral: each wire module renders it in its vendor's format.

    `ok` succeeds (after `delay_ms`); the error kinds answer the vendor's documented status and
    error body; `drop` closes the connection without a response; `cut` sends half the body
    then closes; `truncate` sends a complete HTTP response whose JSON is cut in half;
    `malformed` sends valid JSON of the wrong shape; `raw` sends `status`, `headers`, `body`.
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind = "ok"
    delay_ms: float = Field(default=0.0, ge=0)
    status: int | None = Field(default=None, ge=100, le=599)
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    #: Sent as `retry-after` in seconds, or as an HTTP-date when `retry_after_date` is set.
    retry_after_s: float | None = Field(default=None, ge=0)
    retry_after_date: bool = False
    retry_after_ms: float | None = Field(default=None, ge=0)
    #: Limit headers: OpenAI renders resets as durations ("6m0s"), Anthropic as RFC 3339.
    reset_requests_s: float | None = Field(default=None, ge=0)
    reset_tokens_s: float | None = Field(default=None, ge=0)
    remaining_requests: int | None = Field(default=None, ge=0)
    remaining_tokens: int | None = Field(default=None, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    text: str | None = None
    #: Further chat choices after `text`, for a request that asks for several (`n`).
    choices: list[str] | None = None
    finish_reason: str | None = None
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)
    #: Tool calls to answer with: [{"name": ..., "arguments": {...}}] (each vendor's format).
    tool_calls: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, spec: Fault | str | Mapping[str, object]) -> Fault:
        """A fault from shorthand: "server_error", "rate_limited:2.5" (s), "slow:300" (ms)."""
        if isinstance(spec, Fault):
            return spec
        if not isinstance(spec, str):
            return cls.model_validate(dict(spec))
        name, _, arg = spec.partition(":")
        if name == "slow":
            return cls(kind="ok", delay_ms=float(arg or 1000))
        if name == "raw" and arg:
            return cls(kind="raw", status=int(arg))
        if name not in FAULT_KINDS:
            raise ValueError(f"unknown fault {spec!r} (known: slow, {', '.join(FAULT_KINDS)})")
        data: dict[str, object] = {"kind": name}
        if arg:
            data["retry_after_s"] = float(arg)
        return cls.model_validate(data)


FaultSpec = Fault | str | Mapping[str, object]


@dataclass
class FaultPlan:
    """The mutable fault configuration of one server; tests change it between calls.

    Order per request: the next scripted fault for its custom id, then the shared `script`
    queue, then (when the rate limit admits the request) a draw from `rates`, else `ok`.
    """

    script: deque[Fault] = field(default_factory=deque)
    by_custom_id: dict[str, deque[Fault]] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    #: Retry-After of 429s drawn from `rates` (None: the header is left out).
    rate_retry_after_s: float | None = None
    seed: int | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    #: Success text; None echoes the last user message.
    reply: str | None = None

    def __post_init__(self) -> None:
        self.reseed(self.seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the random draws (faults and latency) from `seed`."""
        self.seed = seed
        self._rng = random.Random(seed)

    def push(self, *specs: FaultSpec, custom_id: str | None = None) -> None:
        """Queue faults, shared or for one custom id (header `x-batchyard-custom-id`)."""
        faults = [Fault.of(s) for s in specs]
        if custom_id is None:
            self.script.extend(faults)
        else:
            self.by_custom_id.setdefault(custom_id, deque()).extend(faults)

    def set_rates(
        self,
        rates: Mapping[str, float],
        seed: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Fault probabilities per kind (each request draws once), with a seed to replay them;
        drawn 429s carry `retry_after_s` when given."""
        unknown = sorted(set(rates) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown} (known: {', '.join(FAULT_KINDS)})")
        if any(not 0 <= r <= 1 for r in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise ValueError("fault rates must each be in [0, 1] and sum to at most 1")
        self.rates = dict(rates)
        self.rate_retry_after_s = retry_after_s
        self.reseed(seed)

    def clear(self) -> None:
        """Forget every scripted fault and rate."""
        self.script.clear()
        self.by_custom_id.clear()
        self.rates = {}

    def scripted(self, custom_id: str | None) -> Fault | None:
        """The next scripted fault for this request, if any."""
        queue = self.by_custom_id.get(custom_id) if custom_id is not None else None
        if queue:
            return queue.popleft()
        return self.script.popleft() if self.script else None

    def drawn(self) -> Fault | None:
        """A fault drawn from `rates`, or None for a normal answer."""
        if not self.rates:
            return None
        draw = self._rng.random()
        for kind, rate in self.rates.items():
            if draw < rate:
                fault = Fault.of(kind)
                if kind == "rate_limited" and self.rate_retry_after_s is not None:
                    fault = fault.model_copy(update={"retry_after_s": self.rate_retry_after_s})
                return fault
            draw -= rate
        return None

    def latency_s(self) -> float:
        """Base latency plus uniform jitter, in seconds."""
        jitter = self._rng.uniform(0, self.latency_jitter_ms) if self.latency_jitter_ms else 0.0
        return (self.latency_ms + jitter) / 1000


@dataclass
class WindowState:
    """Where a sliding window stands, for limit headers."""

    limit_requests: int | None
    limit_tokens: int | None
    remaining_requests: int | None
    remaining_tokens: int | None
    reset_requests_s: float | None
    reset_tokens_s: float | None


class SlidingWindow:
    """Enforced RPM/TPM over a sliding window (60 s unless a test shortens it)."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self.clock = clock
        self._entries: deque[tuple[float, int]] = deque()

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.rpm is not None or self.tpm is not None

    def _prune(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - self.window_s:
            self._entries.popleft()

    def admit(self, tokens: int) -> float | None:
        """Record the request and return None, or return the seconds until it would fit."""
        if not self.enabled:
            return None
        now = self.clock()
        self._prune(now)
        waits = [0.0]
        if self.rpm is not None and len(self._entries) + 1 > self.rpm:
            oldest_to_go = self._entries[len(self._entries) - self.rpm][0]
            waits.append(oldest_to_go + self.window_s - now)
        if self.tpm is not None:
            waits.append(self._token_wait(now, tokens))
        wait = max(waits)
        if wait > 0:
            return wait
        self._entries.append((now, tokens))
        return None

    def _token_wait(self, now: float, tokens: int) -> float:
        assert self.tpm is not None
        if tokens > self.tpm:
            return self.window_s
        excess = sum(t for _, t in self._entries) + tokens - self.tpm
        for stamp, used in self._entries:
            if excess <= 0:
                break
            excess -= used
            if excess <= 0:
                return stamp + self.window_s - now
        return 0.0

    def state(self) -> WindowState:
        """Remaining capacity and when the oldest use leaves the window."""
        now = self.clock()
        self._prune(now)
        used_tokens = sum(t for _, t in self._entries)
        reset = self._entries[0][0] + self.window_s - now if self._entries else 0.0
        return WindowState(
            limit_requests=self.rpm,
            limit_tokens=self.tpm,
            remaining_requests=None if self.rpm is None else max(0, self.rpm - len(self._entries)),
            remaining_tokens=None if self.tpm is None else max(0, self.tpm - used_tokens),
            reset_requests_s=reset,
            reset_tokens_s=reset,
        )


def go_duration(seconds: float) -> str:
    """Seconds as OpenAI writes them in x-ratelimit-reset-*: "20ms", "1.5s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text
