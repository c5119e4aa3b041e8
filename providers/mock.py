"""A scripted provider so the whole system (tests, demos, benchmarks) runs with no network."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import uuid
from collections import Counter
from typing import Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.base import Capabilities, Provider, ProviderConfig, ProviderResponse
from providers.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    Timeout,
)
from providers.mock_gmn import INVALID_KINDS, GMNMock, InvalidKind
from schemas.config import EndpointConfig
from schemas.request import LLMRequest
from schemas.result import Usage

#: Error codes (as stored in results) the mock can raise, and the real class behind each.
ERRORS: dict[str, type[ProviderError]] = {
    cls.code: cls
    for cls in (
        RateLimited,
        Overloaded,
        Timeout,
        ServerError,
        ProtocolError,
        ContextTooLong,
        InvalidRequest,
        AuthError,
        QuotaExceeded,
        ContentFiltered,
    )
}
ErrorCode = Literal[
    "rate_limited",
    "overloaded",
    "timeout",
    "server_error",
    "protocol_error",
    "context_too_long",
    "invalid_request",
    "auth_error",
    "insufficient_quota",
    "content_filtered",
]


class MockReply(BaseModel):
    """Answer `reply` when `pattern` (a regex) matches the last user message."""

    model_config = ConfigDict(extra="forbid")

    pattern: str
    reply: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regex: {exc}") from None
        return value


class MockUsage(BaseModel):
    """Token counts to report instead of the 4-characters-a-token estimate."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)


def _check_step(step: str) -> str:
    name, _, arg = step.partition(":")
    if name == "ok":
        return step
    if name not in ERRORS:
        known = ", ".join(["ok", *ERRORS])
        raise ValueError(f"unknown script step {step!r} (known: {known})")
    if arg:
        if name != "rate_limited":
            raise ValueError(f"step {step!r}: only rate_limited takes an argument (seconds)")
        try:
            if float(arg) < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"step {step!r}: retry-after must be seconds >= 0") from None
    return step


class MockConfig(ProviderConfig):
    """How the mock answers: scripts per custom_id, fault rates, regex/echo/fixed replies, latency.

    Precedence per call: the custom_id's script step, then a fault drawn from `fault_rates`,
    then the first `replies` pattern matching the last user message, then `mode`
    (`gmn`: a GMN document built from the request, see `providers.mock_gmn`).
    """

    mode: Literal["echo", "fixed", "gmn"] = "echo"
    reply: str = "OK"
    replies: list[MockReply] = Field(default_factory=list)
    #: Per custom_id, one step per call: "ok", an error code, or "rate_limited:<seconds>".
    script: dict[str, list[str]] = Field(default_factory=dict)
    #: Probability per call of raising each error code, drawn from the seeded RNG.
    fault_rates: dict[ErrorCode, float] = Field(default_factory=dict)
    #: retry_after_s of RateLimited errors drawn from `fault_rates`.
    fault_retry_after_s: float | None = Field(default=None, ge=0)
    usage: MockUsage | None = None
    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    latency_jitter_ms: float = Field(default=0.0, ge=0, le=600_000)
    #: Mean of an exponentially distributed extra delay (a long tail, like real endpoints).
    latency_exponential_mean_ms: float = Field(default=0.0, ge=0, le=600_000)
    seed: int | None = None
    #: GMN mode: share of first answers made invalid, in one of `gmn_invalid_kinds`.
    gmn_invalid_rate: float = Field(default=0.0, ge=0, le=1)
    gmn_invalid_kinds: list[InvalidKind] = Field(default_factory=lambda: list(INVALID_KINDS))

    @field_validator("script")
    @classmethod
    def _steps(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for steps in value.values():
            for step in steps:
                _check_step(step)
        return value

    @field_validator("fault_rates")
    @classmethod
    def _rates(cls, value: dict[ErrorCode, float]) -> dict[ErrorCode, float]:
        rates = value.values()
        if any(not 0 <= r <= 1 for r in rates) or sum(rates) > 1 + 1e-9:
            raise ValueError("rates must each be in [0, 1] and sum to at most 1")
        return value


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token), the same rule the limiter estimates with."""
    return max(1, (len(text) + 3) // 4)


class MockProvider(Provider):
    """Scripted replies and faults with configurable latency; the default endpoint of an install."""

    name = "mock"
    capabilities = Capabilities(
        json_mode=True, max_context_tokens=128_000, max_output_tokens=16_384
    )
    Config = MockConfig
    options: MockConfig

    def __init__(
        self,
        endpoint: str,
        settings: EndpointConfig,
        options: ProviderConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(endpoint, settings, options, session)
        seed = self.options.seed
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else f"faults:{seed}")
        self._replies = [(re.compile(r.pattern), r.reply) for r in self.options.replies]
        self._run = uuid.uuid4().hex[:8]
        self._ids = itertools.count()
        #: Calls seen per scripted custom_id (others are not counted: memory stays flat).
        self.calls: Counter[str] = Counter()
        opts = self.options
        self._gmn = GMNMock(opts.gmn_invalid_rate, tuple(opts.gmn_invalid_kinds), seed)

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """Sleep the scripted latency, raise the scripted fault or answer, without any I/O."""
        call = self.calls[request.custom_id]
        if request.custom_id in self.options.script:
            self.calls[request.custom_id] += 1
        delay_ms = self.delay_ms()
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        step = self._step(request.custom_id, call)
        if step is not None:
            raise step
        prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        text = self._text(prompt, request)
        override = self.options.usage or MockUsage()
        usage = Usage(
            input_tokens=override.input_tokens
            if override.input_tokens is not None
            else sum(estimate_tokens(m.content) for m in request.messages),
            output_tokens=override.output_tokens
            if override.output_tokens is not None
            else estimate_tokens(text),
        )
        return ProviderResponse(
            text=text,
            finish_reason="stop",
            usage=usage,
            model=model,
            request_id=f"mock-{self._run}-{next(self._ids):x}",
            rate_limits=None,
        )

    def delay_ms(self) -> float:
        """The latency of the next call: fixed, plus uniform jitter, plus the exponential tail."""
        opts = self.options
        delay_ms = opts.latency_ms
        if opts.latency_jitter_ms:
            delay_ms += self._rng.uniform(-opts.latency_jitter_ms, opts.latency_jitter_ms)
        if opts.latency_exponential_mean_ms:
            delay_ms += self._rng.expovariate(1 / opts.latency_exponential_mean_ms)
        return delay_ms

    def _step(self, custom_id: str, call: int) -> ProviderError | None:
        """The error this call must raise, if its script or a fault draw says so."""
        where = f"mock endpoint {self.endpoint!r}"
        steps = self.options.script.get(custom_id, [])
        if call < len(steps):
            name, _, arg = steps[call].partition(":")
            if name == "ok":
                return None
            why = f"{where}: scripted {name} (call {call + 1} of {custom_id!r})"
            return _error(name, why, float(arg) if arg else None)
        if self.options.fault_rates:
            draw = self._fault_rng.random()
            for name, rate in self.options.fault_rates.items():
                if draw < rate:
                    why = f"{where}: injected {name} (fault rate {rate:g})"
                    return _error(name, why, self.options.fault_retry_after_s)
                draw -= rate
        return None

    def _text(self, prompt: str, request: LLMRequest) -> str:
        for pattern, reply in self._replies:
            if pattern.search(prompt):
                return reply
        if self.options.mode == "gmn":
            return self._gmn.answer(request, self._rng)
        return prompt if self.options.mode == "echo" else self.options.reply

    def default_model(self) -> str:
        """`mock-1` unless the endpoint names a model."""
        return self.settings.model_for(None) or "mock-1"


def _error(name: str, message: str, retry_after_s: float | None) -> ProviderError:
    if name == "rate_limited":
        return RateLimited(message, retry_after_s=retry_after_s)
    return ERRORS[name](message)
