"""Anthropic Messages API: its own request format as written, OpenAI chat translated to it and
back, its own error types."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from providers.base import (
    Capabilities,
    HealthStatus,
    LazyModel,
    ProviderConfig,
    ProviderResponse,
)
from providers.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    QuotaExceeded,
    ServerError,
    Unsupported,
)
from providers.http import BaseURL, HTTPConfig, HTTPProvider
from providers.http_response import HTTPResponse, VendorError, rate_limited
from providers.translate import anthropic as claude
from providers.translate.anthropic import FINISH_REASONS
from providers.translate.common import arguments_string
from schemas.request import LLMRequest
from schemas.result import Usage

_CONTEXT_TEXT = re.compile(r"prompt is too long|exceed context limit", re.IGNORECASE)
_CREDIT_TEXT = re.compile(r"credit balance is too low|spend limit", re.IGNORECASE)
_QUOTA_CODES = frozenset({"enforced_spend_limit_reached"})


class AnthropicConfig(HTTPConfig):
    """Endpoint options: API version header and the output budget when a request sets none."""

    base_url: BaseURL = "https://api.anthropic.com"
    anthropic_version: str = Field(default="2023-06-01", min_length=1)
    default_max_tokens: int = Field(default=1024, ge=1, le=1_000_000)


class _Block(LazyModel):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _OutputDetails(LazyModel):
    thinking_tokens: int | None = None


class _Usage(LazyModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None


class _Message(LazyModel):
    id: str | None = None
    model: str | None = None
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage = Field(default_factory=_Usage)


class AnthropicProvider(HTTPProvider):
    """POST {base_url}/v1/messages with x-api-key and anthropic-version headers: Anthropic-format
    requests as written, OpenAI chat requests translated (and their answers back)."""

    name = "anthropic"
    capabilities = Capabilities(
        kinds=frozenset({"chat", "messages"}),
        # No response_format in the Messages API; audio inputs have no equivalent.
        features=frozenset({"images", "files", "tools"}),
        max_context_tokens=200_000,
    )
    Config = AnthropicConfig
    options: AnthropicConfig

    @classmethod
    def needs_api_key(cls, options: ProviderConfig) -> bool:
        """The Messages API authenticates every call with x-api-key."""
        return True

    def vendor_headers(self) -> dict[str, str]:
        """Key and API version."""
        headers = {}
        key = self.api_key()
        if key:
            headers["x-api-key"] = key
        headers["anthropic-version"] = self.options.anthropic_version
        return headers

    def body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        """The Messages body: as written for an Anthropic-format request (`max_tokens`, which
        the API requires, from the endpoint's default when the line has none), translated for
        an OpenAI chat request."""
        if request.kind == "chat":
            return claude.to_messages(request.body, model, self.options.default_max_tokens)
        if request.kind != "messages":
            raise Unsupported(f"endpoint {self.endpoint!r} (anthropic): {request.kind} requests")
        body = dict(request.body)
        body["model"] = model
        body.setdefault("max_tokens", self.options.default_max_tokens)
        return body

    def translates(self, request: LLMRequest) -> bool:
        """OpenAI chat requests are translated to Messages."""
        return request.kind != "messages"

    def check_translation(self, request: LLMRequest) -> None:
        """Whether a chat request translates."""
        if request.kind == "chat":
            self.body(request, "")

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """One message; a `refusal` stop reason raises ContentFiltered."""
        resp = await self.post("/v1/messages", request.custom_id, self.body(request, model))
        if not resp.ok:
            raise self.failure(resp)
        return self.answer(request, resp, model)

    def answer(self, request: LLMRequest, resp: HTTPResponse, model: str) -> ProviderResponse:
        """The message in a successful response (a live call's, or a batch result's)."""
        data, message = self.parse_body(resp, _Message)
        request_id = resp.headers.get("request-id") or message.id
        if message.stop_reason == "refusal":
            raise ContentFiltered(
                f"endpoint {self.endpoint!r}: the model refused (request {request_id})"
            )
        usage = message.usage
        cached = usage.cache_read_input_tokens or 0
        # input_tokens excludes cache reads and writes; results count all input, cached within.
        input_tokens = (usage.input_tokens or 0) + cached + (usage.cache_creation_input_tokens or 0)
        thinking = (usage.output_tokens_details or _OutputDetails()).thinking_tokens
        stop = message.stop_reason or "end_turn"
        calls = [
            {
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": arguments_string(b.input)},
            }
            for b in message.content
            if b.type == "tool_use"
        ]
        return ProviderResponse(
            text="".join(b.text or "" for b in message.content if b.type == "text"),
            finish_reason=FINISH_REASONS.get(stop, stop),
            tool_calls=calls or None,
            usage=Usage(
                input_tokens=input_tokens,
                output_tokens=usage.output_tokens or 0,
                cached_tokens=cached,
                reasoning_tokens=thinking or 0,
            ),
            model=message.model or model,
            request_id=request_id,
            rate_limits=self.announced(resp),
            body=claude.to_chat_answer(data) if request.kind == "chat" else data,
        )

    def classify(
        self, resp: HTTPResponse, err: VendorError, message: str, model: str
    ) -> ProviderError | None:
        """Anthropic's documented error types (its statuses are mostly generic)."""
        status = resp.status
        if err.code in _QUOTA_CODES or err.type == "billing_error":
            return QuotaExceeded(message, status=status)
        if err.type == "invalid_request_error" and _CREDIT_TEXT.search(err.message):
            return QuotaExceeded(message, status=status)
        if _CONTEXT_TEXT.search(err.message) or err.type == "request_too_large":
            return ContextTooLong(message, status=status)
        if err.type in ("authentication_error", "permission_error"):
            return AuthError(message, status=status)
        if err.type == "rate_limit_error":
            return rate_limited(message, resp.headers, status)
        if err.type == "overloaded_error":
            return Overloaded(message, status=status)
        if err.type == "api_error" and status >= 500:
            return ServerError(message, status=status)
        return None

    async def health(self) -> HealthStatus:
        """GET {base_url}/v1/models: reachable, and the key is accepted."""
        return await self.probe("/v1/models", self.headers())
