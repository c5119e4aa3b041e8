"""Anthropic Messages API: system prompt apart, max_tokens required, its own error types."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from providers.base import Capabilities, HealthStatus, ProviderConfig, ProviderResponse
from providers.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    Overloaded,
    ProviderError,
    QuotaExceeded,
    ServerError,
)
from providers.http import (
    BaseURL,
    HTTPConfig,
    HTTPProvider,
    HTTPResponse,
    error_for_status,
    parse_body,
    rate_limited,
    reserved_params,
    vendor_error,
)
from schemas.request import LLMRequest
from schemas.result import Usage

#: stop_reason -> the OpenAI-style finish_reason results carry.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
_CONTEXT_TEXT = re.compile(r"prompt is too long|exceed context limit", re.IGNORECASE)
_CREDIT_TEXT = re.compile(r"credit balance is too low|spend limit", re.IGNORECASE)
_QUOTA_CODES = frozenset({"enforced_spend_limit_reached"})
_RESERVED = frozenset({"model", "messages", "system", "max_tokens", "stream"})


class AnthropicConfig(HTTPConfig):
    """Endpoint options: API version header and the output budget when a request sets none."""

    base_url: BaseURL = "https://api.anthropic.com"
    anthropic_version: str = Field(default="2023-06-01", min_length=1)
    default_max_tokens: int = Field(default=1024, ge=1, le=1_000_000)


class _Block(BaseModel):
    type: str
    text: str | None = None


class _Usage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Message(BaseModel):
    id: str | None = None
    model: str | None = None
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage = Field(default_factory=_Usage)


class AnthropicProvider(HTTPProvider):
    """POST {base_url}/v1/messages with x-api-key and anthropic-version headers."""

    name = "anthropic"
    capabilities = Capabilities(
        json_mode=False, tools=True, max_context_tokens=200_000, max_output_tokens=64_000
    )
    Config = AnthropicConfig
    options: AnthropicConfig

    @classmethod
    def needs_api_key(cls, options: ProviderConfig) -> bool:
        """The Messages API authenticates every call with x-api-key."""
        return True

    def headers(self, custom_id: str | None = None) -> dict[str, str]:
        """Key and API version on top of the shared headers."""
        headers = self.base_headers(custom_id)
        key = self.api_key()
        if key:
            headers["x-api-key"] = key
        headers["anthropic-version"] = self.options.anthropic_version
        return headers

    def body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        """The Messages request: system messages joined into `system`, the rest in order."""
        reserved_params(request.params, _RESERVED, self.endpoint)
        fmt = (request.response_format or {}).get("type", "text")
        if fmt != "text":
            raise InvalidRequest(
                f"endpoint {self.endpoint!r}: response_format {fmt!r} is not supported by the "
                "anthropic adapter; route JSON-mode requests elsewhere or pass vendor fields "
                "in params"
            )
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        turns = [
            {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
        ]
        if not turns:
            raise InvalidRequest(
                f"endpoint {self.endpoint!r}: needs a user message, not only system"
            )
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or self.options.default_max_tokens,
            "messages": turns,
        }
        if system:
            body["system"] = system
        if request.stop is not None:
            body["stop_sequences"] = (
                [request.stop] if isinstance(request.stop, str) else request.stop
            )
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        body.update(request.params)
        return body

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """One message; a `refusal` stop reason raises ContentFiltered."""
        resp = await self.send(
            "POST", "/v1/messages", self.headers(request.custom_id), self.body(request, model)
        )
        if not resp.ok:
            raise self.error(resp)
        message = parse_body(resp, _Message, self.endpoint)
        request_id = resp.headers.get("request-id") or message.id
        if message.stop_reason == "refusal":
            raise ContentFiltered(
                f"endpoint {self.endpoint!r}: the model refused (request {request_id})"
            )
        usage = message.usage
        cached = usage.cache_read_input_tokens or 0
        # input_tokens excludes cache reads and writes; results count all input, cached within.
        input_tokens = (usage.input_tokens or 0) + cached + (usage.cache_creation_input_tokens or 0)
        stop = message.stop_reason or "end_turn"
        return ProviderResponse(
            text="".join(b.text or "" for b in message.content if b.type == "text"),
            finish_reason=FINISH_REASONS.get(stop, stop),
            usage=Usage(
                input_tokens=input_tokens,
                output_tokens=usage.output_tokens or 0,
                cached_tokens=cached,
            ),
            model=message.model or model,
            request_id=request_id,
            rate_limits=self.announced(resp),
        )

    def error(self, resp: HTTPResponse) -> ProviderError:
        """Map an error as Anthropic documents it: the error type first, the status second."""
        err = vendor_error(resp.body)
        message = self.describe(resp, err)
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
        return error_for_status(message, resp)

    async def health(self) -> HealthStatus:
        """GET {base_url}/v1/models: reachable, and the key is accepted."""
        return await self.probe("/v1/models", self.headers())
