"""The typed LLM request a producer enqueues and a worker executes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant"]
Tier = Literal["basic", "advanced"]

#: custom_id is used in Redis keys and file names downstream: keep it printable and bounded.
CUSTOM_ID_MAX = 512


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class RouteHop(BaseModel):
    """One endpoint of a route, optionally pinning the model or tier used there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str | None = None
    tier: Tier | None = None


class LLMRequest(BaseModel):
    """A provider-neutral chat request; `params` carries vendor extras through untouched."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=CUSTOM_ID_MAX)
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    tier: Tier | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    route: list[RouteHop] | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("custom_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must contain printable characters only")
        return value

    def prompt_chars(self) -> int:
        """Size of the prompt, the basis of token estimates before the provider reports usage."""
        return sum(len(m.content) for m in self.messages)
