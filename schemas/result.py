"""What a worker writes back for each request: exactly one result per (batch, custom_id)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.request import EndpointKind
from schemas.trusted import trusted

ResultStatus = Literal["succeeded", "errored", "expired", "cancelled"]


class Usage(BaseModel):
    """Token counts as the provider reported them."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    #: Part of input_tokens read from the provider's prompt cache.
    cached_tokens: int = Field(default=0, ge=0)
    #: Part of output_tokens spent on hidden reasoning (billed as output).
    reasoning_tokens: int = Field(default=0, ge=0)

    @field_validator("*", mode="before")
    @classmethod
    def _unknown_if_negative(cls, value: Any) -> Any:
        """A negative count from a vendor reads as unknown (0): refusing it failed the whole
        answer, already paid for, and sent it round dramatiq's retries to be paid again."""
        return 0 if isinstance(value, int) and value < 0 else value

    @classmethod
    def counted(
        cls,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> Usage:
        """The usage of counts an answer's validation already made `int | None`: None and
        negative counts read as 0, as validating them does, without validating again (its
        four validator calls were ~1.5 us of every answer, #22)."""
        fields = {
            "input_tokens": _count(input_tokens),
            "output_tokens": _count(output_tokens),
            "cached_tokens": _count(cached_tokens),
            "reasoning_tokens": _count(reasoning_tokens),
        }
        return trusted(cls, fields, set(_USAGE_FIELDS))


def _count(value: int | None) -> int:
    """A validated count as `Usage` keeps it: None and negative read as 0."""
    return value if value and value > 0 else 0


_USAGE_FIELDS = tuple(Usage.model_fields)


class ErrorInfo(BaseModel):
    """Why a request (or an input line) did not succeed."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    line: int | None = None
    #: HTTP status of the provider's answer when the provider answered with an error.
    status: int | None = None
    #: The provider's error body as received (a JSON object), when it sent one.
    body: dict[str, Any] | None = None


class Attempt(BaseModel):
    """One call to one endpoint: the hop list of a result is made of these."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    model: str | None = None
    error: str | None = None
    latency_ms: float = 0.0


class Timings(BaseModel):
    """Wall-clock points of a request's life, in epoch seconds."""

    model_config = ConfigDict(extra="forbid")

    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


class LLMResult(BaseModel):
    """The outcome of one request, as stored in Redis and exported by collectors."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str | None
    batch_id: str
    status: ResultStatus
    kind: EndpointKind = "chat"
    #: The answer's text (chat, completions, responses, messages), for batchyard's own use.
    output: str | None = None
    #: Tool calls of the answer, in OpenAI's chat format.
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    #: The provider's response body as received, in the request's own format (translated back
    #: only when the route crossed vendors). Embedding vectors inside it are stored as base64
    #: float32 (`schemas.vectors`); `vectors` says how to write them out.
    body: dict[str, Any] | None = None
    vectors: Literal["float", "base64"] | None = None
    endpoint: str | None = None
    model: str | None = None
    request_id: str | None = None
    usage: Usage = Field(default_factory=Usage)
    #: USD by the endpoint's price table; None when it has none for this model.
    cost_usd: float | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    trace_id: str | None = None
    error: ErrorInfo | None = None
    #: Output of a task reviewer (e.g. the GMN document, its validity and rounds used).
    extra: dict[str, Any] = Field(default_factory=dict)

    def json_bytes(self) -> bytes:
        """`model_dump_json()`'s document, as bytes: written by orjson from the fields, which
        took a worker at 0 ms about half the CPU of pydantic's serializer (#22).

        Anything orjson would write differently from pydantic (a datetime, a dataclass, a
        model or a set inside `body` or `extra`, a key that is not a string, ...) is not
        written by it: such a result takes pydantic's way.
        """
        try:
            return orjson.dumps(self.__dict__, default=_nested, option=_PASS_ON)
        except TypeError:
            return self.__pydantic_serializer__.to_json(self)


#: The models a result holds, written as their fields (in declaration order, as pydantic does).
_NESTED = frozenset({Usage, ErrorInfo, Attempt, Timings})
#: Types orjson writes itself in its own way go to `_nested` (and so to pydantic) instead.
_PASS_ON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_PASS_ON |= orjson.OPT_PASSTHROUGH_SUBCLASS


def _nested(value: Any) -> dict[str, Any]:
    if type(value) in _NESTED:
        return value.__dict__  # type: ignore[no-any-return]
    raise TypeError(type(value).__name__)
