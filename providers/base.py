"""The adapter ABC: what batchyard needs from a provider, and what it declares about itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from schemas.config import EndpointConfig
from schemas.request import LLMRequest
from schemas.result import Usage


class Capabilities(BaseModel):
    """What an adapter can do; routing and validation read these."""

    model_config = ConfigDict(frozen=True)

    json_mode: bool = False
    tools: bool = False
    streaming: bool = False
    max_context_tokens: int = 8192
    max_output_tokens: int = 4096


class ProviderConfig(BaseModel):
    """Provider-specific endpoint options; subclasses add fields. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class AnnouncedLimits(BaseModel):
    """Per-minute limits a provider states in its response headers."""

    limit_requests: int | None = None
    limit_tokens: int | None = None


class ProviderResponse(BaseModel):
    """A successful completion, provider-neutral."""

    text: str
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    model: str
    request_id: str | None = None
    #: Limits the provider announced (x-ratelimit-limit-*), learned by the rate limiter.
    rate_limits: AnnouncedLimits | None = None


class HealthStatus(BaseModel):
    """The answer of `Provider.health()`."""

    ok: bool
    latency_ms: float = 0.0
    detail: str = ""


class Provider(ABC):
    """Base of every adapter. One instance per endpoint per worker process."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    Config: ClassVar[type[ProviderConfig]] = ProviderConfig

    def __init__(
        self,
        endpoint: str,
        settings: EndpointConfig,
        options: ProviderConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.options = options
        self.session = session

    @abstractmethod
    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """Run one request; raise only `providers.errors` exceptions."""

    async def health(self) -> HealthStatus:
        """Cheap liveness check; adapters with a real endpoint override it."""
        return HealthStatus(ok=True)

    async def aclose(self) -> None:
        """Release per-adapter resources (the shared session is closed by its owner)."""
        return None

    def default_model(self) -> str:
        """The model used when neither request nor route names one."""
        return self.settings.model_for(None) or self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} endpoint={self.endpoint!r}>"

    @classmethod
    def needs_api_key(cls, options: ProviderConfig) -> bool:
        """Whether an endpoint with these options cannot work without `api_key`."""
        return False

    @classmethod
    def validate_options(cls, options: dict[str, Any]) -> ProviderConfig:
        """Check provider-specific keys against the adapter's `Config`."""
        return cls.Config.model_validate(options)
