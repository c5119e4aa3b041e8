"""The adapter ABC: what batchyard needs from a provider, and what it declares about itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from providers.errors import Unsupported
from providers.headers import RateLimits
from schemas.config import EndpointConfig
from schemas.features import Feature, needs
from schemas.request import EndpointKind, LLMRequest
from schemas.result import Usage
from schemas.trusted import trusted

if TYPE_CHECKING:  # imported by whoever makes a session: a worker whose calls all go over
    import aiohttp  # `providers.wire` never imports it (~80 ms of CPU at start, #22)

#: Every feature: an adapter that accepts whatever a request may carry.
ALL_FEATURES: frozenset[Feature] = frozenset(get_args(Feature))
#: How a missing capability is named in the `unsupported` error.
_FEATURE_TEXT: dict[Feature, str] = {
    "images": "image inputs",
    "audio": "audio",
    "files": "file inputs",
    "tools": "tools",
    "json_object": "response_format json_object",
    "json_schema": "response_format json_schema",
}


#: True while the caller bounds the whole `generate` by the endpoint's `timeout_s` itself
#: (`workers.calls` does, with asyncio.timeout): an adapter then arms no total-time timer of
#: its own for the same bound, which could only fire after the caller's.
CALLER_BOUNDS_TIME: ContextVar[bool] = ContextVar("batchyard_caller_bounds_time", default=False)


class LazyModel(BaseModel):
    """A model most processes never use (an answer format of an API their config does not
    call): pydantic builds its validator when it first validates, not at import (#22)."""

    model_config = ConfigDict(defer_build=True)


class Capabilities(BaseModel):
    """What an adapter can serve; the router skips an endpoint that lacks what a request needs
    (error `unsupported`, no call made) and tries the next hop."""

    # An unknown field (an adapter written against the earlier flags, `images=True`...) is an
    # error, not a capability silently dropped.
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Endpoint kinds it answers, natively or by translating the request.
    kinds: frozenset[EndpointKind] = frozenset({"chat"})
    #: What it accepts beyond plain text, in the words `schemas.features.needs` finds in a
    #: request (image, audio and file inputs, tools, `response_format` json_object/json_schema).
    features: frozenset[Feature] = frozenset()
    #: Whether the endpoint decodes under a JSON Schema sent with the request, so the answer
    #: cannot leave it (OpenAI `strict`, llama.cpp/vLLM `json_schema`, Ollama `format`). A
    #: structured request's schema is then sent with `strict: true`; elsewhere it is left off
    #: the wire and the answer is validated after the fact (`workers.structured`).
    strict_schema: bool = False
    #: Whether a chat request may ask for several answers at once (`n`).
    n_choices: bool = False
    #: The context window checked before a call, unless the endpoint config sets its own.
    max_context_tokens: int = 8192

    def missing(self, request: LLMRequest) -> list[str]:
        """What the request needs that this adapter cannot give, in words; empty if none."""
        out = [] if request.kind in self.kinds else [f"{request.kind} requests"]
        if self.features != ALL_FEATURES:  # else nothing it needs can be missing: no look
            out += [_FEATURE_TEXT[f] for f in sorted(needs(request) - self.features)]
        return out


class ProviderConfig(BaseModel):
    """Provider-specific endpoint options; subclasses add fields. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ProviderResponse(BaseModel):
    """A successful answer: the fields batchyard reads itself, and the provider's body."""

    text: str = ""
    finish_reason: str | None = "stop"
    #: Tool calls in OpenAI's chat format (translated from other vendors' formats).
    tool_calls: list[dict[str, Any]] | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str
    request_id: str | None = None
    #: The provider's response body as received, in the request's own format: verbatim from
    #: an endpoint of the request's vendor, translated back from any other.
    body: dict[str, Any] | None = None
    #: Limits the provider announced (x-ratelimit-*), learned by the rate limiter.
    rate_limits: RateLimits | None = None


#: The fields `answered` sets, all: `model_fields_set` as `ProviderResponse(...)` with them.
_ANSWERED = frozenset(ProviderResponse.model_fields)


def answered(
    *,
    text: str,
    finish_reason: str | None,
    tool_calls: list[dict[str, Any]] | None,
    usage: Usage,
    model: str,
    request_id: str | None,
    body: dict[str, Any] | None,
    rate_limits: RateLimits | None,
) -> ProviderResponse:
    """A `ProviderResponse` of values an adapter read from an answer it validated, built
    without validating them again (~2 us of every call, #22). The caller hands over `body` and
    `tool_calls`: fresh objects of this answer, which validation would have copied."""
    fields = {
        "text": text,
        "finish_reason": finish_reason,
        "tool_calls": tool_calls,
        "usage": usage,
        "model": model,
        "request_id": request_id,
        "body": body,
        "rate_limits": rate_limits,
    }
    return trusted(ProviderResponse, fields, set(_ANSWERED))


class HealthStatus(BaseModel):
    """The answer of `Provider.health()`."""

    ok: bool
    latency_ms: float = 0.0
    detail: str = ""


class Provider(ABC):
    """Base of every adapter. One instance per endpoint per worker process."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Whether answers may carry rate-limit headers: then every call goes through the shared
    #: limiter from the first one, so a process that has not seen an answer yet cannot
    #: overrun what the others learned.
    announces_limits: ClassVar[bool] = True
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
        self._session = session
        #: Makes the process's shared session at the adapter's first use of `session`, where
        #: the caller passed none (workers: most never need one).
        self.sessions: Callable[[], aiohttp.ClientSession] | None = None
        self.setup()

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The process's shared aiohttp session: the one passed in, else `sessions()`'s."""
        if self._session is None and self.sessions is not None:
            self._session = self.sessions()
        return self._session

    @session.setter
    def session(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session

    def setup(self) -> None:
        """Build what the adapter derives from its options (random generators, compiled
        patterns, counters), once, at the end of `__init__`: adapters extend this instead of
        repeating the constructor's signature."""
        return None

    @abstractmethod
    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """Run one request; raise only `providers.errors` exceptions."""

    def translates(self, request: LLMRequest) -> bool:
        """Whether the request is in another vendor's format here (its own `model` then names
        another vendor's model, so the endpoint's configured one is preferred)."""
        return False

    def unsupported(self, request: LLMRequest) -> str | None:
        """Why this endpoint cannot serve the request (checked before any call), or None.

        Capabilities first, then the translation (`check_translation`).
        """
        missing = self.capabilities.missing(request)
        if not missing:
            try:
                self.check_translation(request)
            except Unsupported as exc:
                missing = [exc.message]
        if not missing:
            return None
        return f"endpoint {self.endpoint!r} ({self.name}) cannot serve {', '.join(missing)}"

    def check_translation(self, request: LLMRequest) -> None:
        """Raise Unsupported when the request does not translate to this vendor's format;
        adapters that translate override it (by default nothing is translated)."""
        return None

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
