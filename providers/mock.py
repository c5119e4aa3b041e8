"""A scripted provider so the whole system (tests, demos, benchmarks) runs with no network."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers import answers
from providers.base import ALL_FEATURES, Capabilities, Provider, ProviderConfig, ProviderResponse
from providers.errors import BY_CODE, ProviderError, RateLimited
from schemas.config import Regex
from schemas.request import LLMRequest
from schemas.result import Usage
from schemas.tokens import estimate_tokens, input_tokens

if TYPE_CHECKING:
    from providers.mock_gmn import GMNMock

#: Error codes (as stored in results) the mock can raise, and the real class behind each.
ERRORS: dict[str, type[ProviderError]] = BY_CODE
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

#: Ways the GMN mode breaks a first answer (`providers.mock_gmn.corrupt`). Named here, not in
#: that module: it imports `schemas.gmn` (~20 modules, ~25 ms of CPU), which only the GMN mode
#: needs, and the mock is the default endpoint that every `batchyard run` without a config
#: checks and loads (#22).
InvalidKind = Literal[
    "unnormalized_likelihood",
    "dangling_edge",
    "missing_action",
    "trailing_comma",
    "prose_only",
    "cycle",
    "unknown_node_type",
    "flat_properties",
    "wrong_belief_length",
    "isolated_node",
    "truncated",
]
INVALID_KINDS: Final[tuple[InvalidKind, ...]] = get_args(InvalidKind)


class MockReply(BaseModel):
    """Answer `reply` when `pattern` (a regex) matches the last user message."""

    model_config = ConfigDict(extra="forbid")

    pattern: Regex
    reply: str


class MockUsage(BaseModel):
    """Token counts to report instead of the estimate (`schemas.tokens`)."""

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
    #: Size of the vectors of an embeddings request that sets no `dimensions`.
    embedding_dimensions: int = Field(default=1536, ge=1, le=65_536)
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


class MockProvider(Provider):
    """Scripted replies and faults with configurable latency; the default endpoint of an install.

    Answers every endpoint kind: chat and Messages answers as their fields (text, or a tool
    call when the body forces one), the other kinds with their vendor's body
    (`providers.answers`): vectors for embeddings, a `response` object, and so on.
    """

    announces_limits = False

    name = "mock"
    capabilities = Capabilities(
        kinds=frozenset(
            {"chat", "embeddings", "responses", "completions", "moderations", "messages"}
        ),
        features=ALL_FEATURES,
        max_context_tokens=128_000,
    )
    Config = MockConfig
    options: MockConfig

    def setup(self) -> None:
        """Random generators (seeded by the options), the scripted replies compiled, counters."""
        seed = self.options.seed
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else f"faults:{seed}")
        self._replies = [(re.compile(r.pattern), r.reply) for r in self.options.replies]
        self._run = uuid.uuid4().hex[:8]
        self._ids = itertools.count()
        #: Calls seen per scripted custom_id (others are not counted: memory stays flat).
        self.calls: Counter[str] = Counter()
        opts = self.options
        self._gmn: GMNMock | None = None
        if opts.mode == "gmn":
            from providers.mock_gmn import GMNMock

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
        request_id = f"mock-{self._run}-{next(self._ids):x}"
        kind, body = request.kind, request.body
        if kind in ("embeddings", "moderations"):
            return self._inputs_answer(request, model, request_id)
        text = self._text(_prompt(request), request)
        override = self.options.usage or MockUsage()
        usage = Usage(
            input_tokens=override.input_tokens
            if override.input_tokens is not None
            else input_tokens(request),
            output_tokens=override.output_tokens
            if override.output_tokens is not None
            else estimate_tokens(text),
        )
        calls = answers.forced_tool_calls(body) if kind == "chat" else None
        finish = "tool_calls" if calls else "stop"
        if kind == "messages":
            blocks = answers.forced_tool_use(body)
            if blocks:
                finish, calls = "tool_calls", _tool_calls(blocks)
        # A chat or Messages answer's body would hold nothing its fields do not: output lines
        # build it from them (schemas.batch_output), so the mock keeps none and stays cheap.
        answer = answers.text_body(kind, model, text, usage.input_tokens, usage.output_tokens)
        return ProviderResponse(
            text="" if calls else text,
            finish_reason=finish,
            tool_calls=calls,
            usage=usage,
            model=model,
            request_id=request_id,
            body=answer,
        )

    def _inputs_answer(self, request: LLMRequest, model: str, request_id: str) -> ProviderResponse:
        """Vectors or moderation results, one per input."""
        body = request.body
        inputs = answers.texts_of(body.get("input"))
        if request.kind == "moderations":
            answer = answers.moderation(model, inputs)
            return ProviderResponse(
                finish_reason=None, model=model, request_id=request_id, body=answer
            )
        dims = body.get("dimensions") or self.options.embedding_dimensions
        answer = answers.embeddings_list(
            model, inputs, dims, body.get("encoding_format") or "float"
        )
        override = self.options.usage or MockUsage()
        tokens = override.input_tokens
        if tokens is None:
            tokens = answer["usage"]["prompt_tokens"]
        return ProviderResponse(
            finish_reason=None,
            usage=Usage(input_tokens=tokens),
            model=model,
            request_id=request_id,
            body=answer,
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
        if self._gmn is not None:
            return self._gmn.answer(request, self._rng)
        return prompt if self.options.mode == "echo" else self.options.reply

    def default_model(self) -> str:
        """`mock-1` unless the endpoint names a model."""
        return self.settings.model_for(None) or "mock-1"


def _prompt(request: LLMRequest) -> str:
    """The text the mock answers to: the last user turn, or the prompt / input text."""
    body = request.body
    if request.kind in ("chat", "messages"):
        for msg in reversed(body.get("messages") or ()):
            if msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
                return "".join(p.get("text", "") for p in content or () if p.get("type") == "text")
        return ""
    value = body.get("prompt") if request.kind == "completions" else body.get("input")
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, str)]
        for item in reversed(value):
            if isinstance(item, dict) and item.get("role") == "user":
                content = item.get("content")
                texts = (
                    [content]
                    if isinstance(content, str)
                    else [p.get("text", "") for p in content or () if isinstance(p, dict)]
                )
                break
        return "".join(texts)
    return value if isinstance(value, str) else ""


def _tool_calls(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": orjson.dumps(b["input"]).decode()},
        }
        for b in blocks
        if b["type"] == "tool_use"
    ]


def _error(name: str, message: str, retry_after_s: float | None) -> ProviderError:
    if name == "rate_limited":
        return RateLimited(message, retry_after_s=retry_after_s)
    return ERRORS[name](message)
