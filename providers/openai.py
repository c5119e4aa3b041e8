"""OpenAI Chat Completions, and the servers that speak it (vLLM, llama.cpp, LiteLLM, OpenRouter)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from providers.base import Capabilities, HealthStatus, ProviderConfig, ProviderResponse
from providers.errors import ContentFiltered, ContextTooLong, ProviderError, QuotaExceeded
from providers.http import (
    BaseURL,
    HTTPConfig,
    HTTPProvider,
    HTTPResponse,
    VendorError,
    error_for_status,
    parse_body,
    reserved_params,
    vendor_error,
)
from schemas.request import LLMRequest
from schemas.result import Usage

#: error.type / error.code values that mean "no money left", not "slow down" (OpenAI docs).
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "billing_hard_limit_reached",
    }
)
#: OpenAI's code, llama.cpp's type, and the phrases vLLM / gateways put in the message.
CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context length exceeded|exceeds? the (available )?context",
    re.IGNORECASE,
)
_RESERVED = frozenset({"model", "messages", "stream"})


class OpenAIConfig(HTTPConfig):
    """Endpoint options: where the server is, and how it wants the output budget spelled."""

    base_url: BaseURL = "https://api.openai.com/v1"
    organization: str | None = None
    #: o-series and newer OpenAI models take `max_completion_tokens`; most servers `max_tokens`.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _PromptDetails(BaseModel):
    cached_tokens: int | None = None


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None


class _Completion(BaseModel):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


class OpenAIProvider(HTTPProvider):
    """POST {base_url}/chat/completions with Bearer auth (optional for local servers)."""

    name = "openai"
    capabilities = Capabilities(
        json_mode=True, tools=True, max_context_tokens=128_000, max_output_tokens=16_384
    )
    Config = OpenAIConfig
    options: OpenAIConfig

    @classmethod
    def needs_api_key(cls, options: ProviderConfig) -> bool:
        """OpenAI's own API always does; local and self-hosted servers usually do not."""
        return isinstance(options, OpenAIConfig) and "api.openai.com" in str(options.base_url)

    def headers(self, custom_id: str | None = None) -> dict[str, str]:
        """Auth and organization headers on top of the shared ones."""
        headers = self.base_headers(custom_id)
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        if self.options.organization:
            headers["openai-organization"] = self.options.organization
        return headers

    def body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        """The Chat Completions request body; `params` pass through untouched."""
        reserved_params(request.params, _RESERVED, self.endpoint)
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_tokens is not None:
            body[self.options.max_tokens_field] = request.max_tokens
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "response_format": request.response_format,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(request.params)
        return body

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """One chat completion; content_filter and refusals raise ContentFiltered."""
        resp = await self.send(
            "POST", "/chat/completions", self.headers(request.custom_id), self.body(request, model)
        )
        if not resp.ok:
            raise self.error(resp)
        completion = parse_body(resp, _Completion, self.endpoint)
        choice = completion.choices[0]
        request_id = resp.headers.get("x-request-id") or completion.id
        if choice.finish_reason == "content_filter" or choice.message.refusal:
            detail = self.redact(choice.message.refusal or "finish_reason content_filter")
            raise ContentFiltered(f"endpoint {self.endpoint!r}: {detail} (request {request_id})")
        usage = completion.usage or _Usage()
        details = usage.prompt_tokens_details or _PromptDetails()
        return ProviderResponse(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            usage=Usage(
                input_tokens=usage.prompt_tokens or 0,
                output_tokens=usage.completion_tokens or 0,
                cached_tokens=details.cached_tokens or 0,
            ),
            model=completion.model or model,
            request_id=request_id,
            rate_limits=self.announced(resp),
        )

    def error(self, resp: HTTPResponse) -> ProviderError:
        """Map a non-2xx answer as OpenAI documents its codes; the status decides the rest."""
        err = vendor_error(resp.body)
        message = self.describe(resp, err)
        if resp.status == 429 and _is_quota(err):
            return QuotaExceeded(message, status=resp.status)
        if resp.status in (400, 413) and _is_context(err):
            return ContextTooLong(message, status=resp.status)
        if resp.status == 400 and err.code == "content_filter":  # Azure OpenAI's prompt filter
            return ContentFiltered(message, status=resp.status)
        return error_for_status(message, resp)

    async def health(self) -> HealthStatus:
        """GET {base_url}/models: reachable, and the key is accepted."""
        return await self.probe("/models", self.headers())


def _is_quota(err: VendorError) -> bool:
    return err.type in QUOTA_CODES or err.code in QUOTA_CODES


def _is_context(err: VendorError) -> bool:
    return (
        err.code in CONTEXT_CODES
        or err.type in CONTEXT_CODES
        or bool(_CONTEXT_TEXT.search(err.message))
    )
