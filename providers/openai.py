"""OpenAI's API and the servers that speak it (vLLM, llama.cpp, LiteLLM, OpenRouter): chat,
embeddings, responses, completions and moderations, each body sent as the user wrote it."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Required

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

from providers.base import (
    ALL_FEATURES,
    Capabilities,
    HealthStatus,
    LazyModel,
    ProviderConfig,
    ProviderResponse,
    answered,
)
from providers.errors import (
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    QuotaExceeded,
    ServerError,
)
from providers.http import BaseURL, HTTPConfig, HTTPProvider
from providers.http_response import HTTPResponse, VendorError
from providers.translate import anthropic as claude
from schemas.request import EndpointKind, LLMRequest
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
#: The path under base_url of each kind (Anthropic-format requests go to chat, translated).
PATHS: dict[EndpointKind, str] = {
    "chat": "/chat/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
    "completions": "/completions",
    "moderations": "/moderations",
    "messages": "/chat/completions",
}
#: Output budget spellings of a chat body.
_BUDGETS = ("max_tokens", "max_completion_tokens")


class OpenAIConfig(HTTPConfig):
    """Endpoint options: where the server is, and how it wants the output budget spelled."""

    base_url: BaseURL = "https://api.openai.com/v1"
    organization: str | None = None
    #: Unset: a chat body's output budget goes as written. Set: it is renamed to the spelling
    #: this server takes (o-series OpenAI models accept only `max_completion_tokens`; some
    #: older local servers only `max_tokens`).
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None


# A chat answer is read on every call: its shape is checked as typed dicts, which pydantic
# validates in under half the time of the same shape as models (no instance per object, #22).
# The other formats' models refer to the usage parts below, so those are typed dicts too.
class _PromptDetails(TypedDict, total=False):
    cached_tokens: int | None


class _OutputDetails(TypedDict, total=False):
    reasoning_tokens: int | None


class _Usage(TypedDict, total=False):
    prompt_tokens: int | None
    completion_tokens: int | None
    prompt_tokens_details: _PromptDetails | None
    completion_tokens_details: _OutputDetails | None


class _Message(TypedDict, total=False):
    content: str | None
    refusal: str | None
    tool_calls: list[dict[str, Any]] | None


class _Choice(TypedDict, total=False):
    message: Required[_Message]
    finish_reason: str | None


class _Completion(TypedDict, total=False):
    id: str | None
    model: str | None
    choices: Required[Annotated[list[_Choice], Field(min_length=1)]]
    usage: _Usage | None


_COMPLETION = TypeAdapter(_Completion)


class _TextChoice(LazyModel):
    text: str | None = None
    finish_reason: str | None = None


class _TextCompletion(LazyModel):
    id: str | None = None
    model: str | None = None
    choices: list[_TextChoice] = Field(min_length=1)
    usage: _Usage | None = None


class _Embeddings(LazyModel):
    model: str | None = None
    #: Vectors are not validated one float at a time: a list of objects is enough here.
    data: list[dict[str, Any]] = Field(min_length=1)
    usage: _Usage | None = None


class _Moderation(LazyModel):
    id: str | None = None
    model: str | None = None
    results: list[dict[str, Any]] = Field(min_length=1)


class _ResponseUsage(LazyModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _PromptDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Response(LazyModel):
    id: str | None = None
    model: str | None = None
    status: str | None = None
    output: list[dict[str, Any]]
    usage: _ResponseUsage | None = None
    incomplete_details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class OpenAIProvider(HTTPProvider):
    """POST {base_url}/<kind path> with Bearer auth (optional for local servers)."""

    name = "openai"
    capabilities = Capabilities(
        kinds=frozenset(PATHS),
        features=ALL_FEATURES,
        strict_schema=True,
        n_choices=True,
        max_context_tokens=128_000,
    )
    Config = OpenAIConfig
    options: OpenAIConfig

    @classmethod
    def needs_api_key(cls, options: ProviderConfig) -> bool:
        """OpenAI's own API always does; local and self-hosted servers usually do not."""
        return isinstance(options, OpenAIConfig) and "api.openai.com" in str(options.base_url)

    def vendor_headers(self) -> dict[str, str]:
        """Auth and organization headers."""
        headers = {}
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        if self.options.organization:
            headers["openai-organization"] = self.options.organization
        return headers

    def body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        """The body as the request wrote it, with the model batchyard chose; an Anthropic-format
        request is translated to chat."""
        if request.kind == "messages":
            body = claude.to_chat(request.body, model)
        else:
            body = dict(request.body)
            body["model"] = model
        field = self.options.max_tokens_field
        if field is not None and request.kind in ("chat", "messages"):
            other = _BUDGETS[_BUDGETS.index(field) - 1]
            if other in body and field not in body:
                body[field] = body.pop(other)
        return body

    def translates(self, request: LLMRequest) -> bool:
        """Anthropic-format requests are translated to chat."""
        return request.kind == "messages"

    def check_translation(self, request: LLMRequest) -> None:
        """Whether an Anthropic-format request translates."""
        if request.kind == "messages":
            claude.to_chat(request.body, "")

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """One call; content_filter and refusals raise ContentFiltered."""
        resp = await self.post(PATHS[request.kind], request.custom_id, self.body(request, model))
        if not resp.ok:
            raise self.failure(resp)
        return self.answer(request, resp, model)

    def answer(self, request: LLMRequest, resp: HTTPResponse, model: str) -> ProviderResponse:
        """The answer in a successful response (a live call's, or a vendor batch line's)."""
        # Each reader sets the answer's `rate_limits` as it builds it: assigning the field
        # after was pydantic's `__setattr__` on every call (#22).
        answer = _READERS[request.kind](self, resp, model)
        if request.kind == "messages" and answer.body is not None:
            answer.body = claude.to_message_answer(answer.body)
        return answer

    def _chat(self, resp: HTTPResponse, model: str) -> ProviderResponse:
        data, completion = self.parse_body(resp, _COMPLETION)
        choice = completion["choices"][0]
        message = choice["message"]
        reason, refusal = choice.get("finish_reason"), message.get("refusal")
        request_id = resp.headers.get("x-request-id") or completion.get("id")
        if reason == "content_filter" or refusal:
            detail = self.redact(refusal or "finish_reason content_filter")
            raise ContentFiltered(f"endpoint {self.endpoint!r}: {detail} (request {request_id})")
        return answered(
            text=message.get("content") or "",
            finish_reason=reason or "stop",
            tool_calls=message.get("tool_calls") or None,
            usage=_usage(completion.get("usage")),
            model=completion.get("model") or model,
            request_id=request_id,
            body=data,
            rate_limits=self.announced(resp),
        )

    def _completions(self, resp: HTTPResponse, model: str) -> ProviderResponse:
        data, completion = self.parse_body(resp, _TextCompletion)
        choice = completion.choices[0]
        return ProviderResponse(
            text=choice.text or "",
            finish_reason=choice.finish_reason or "stop",
            usage=_usage(completion.usage),
            model=completion.model or model,
            request_id=resp.headers.get("x-request-id") or completion.id,
            body=data,
            rate_limits=self.announced(resp),
        )

    def _embeddings(self, resp: HTTPResponse, model: str) -> ProviderResponse:
        data, answer = self.parse_body(resp, _Embeddings)
        usage = answer.usage or {}
        return ProviderResponse(
            finish_reason=None,
            usage=Usage(input_tokens=usage.get("prompt_tokens") or 0),
            model=answer.model or model,
            request_id=resp.headers.get("x-request-id"),
            body=data,
            rate_limits=self.announced(resp),
        )

    def _moderations(self, resp: HTTPResponse, model: str) -> ProviderResponse:
        data, answer = self.parse_body(resp, _Moderation)
        return ProviderResponse(
            finish_reason=None,
            model=answer.model or model,
            request_id=resp.headers.get("x-request-id") or answer.id,
            body=data,
            rate_limits=self.announced(resp),
        )

    def _responses(self, resp: HTTPResponse, model: str) -> ProviderResponse:
        data, answer = self.parse_body(resp, _Response)
        request_id = resp.headers.get("x-request-id") or answer.id
        if answer.status == "failed":
            detail = (answer.error or {}).get("message") or "status failed"
            raise ServerError(f"endpoint {self.endpoint!r}: {self.redact(str(detail))}")
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for item in answer.output:
            if item.get("type") == "message":
                for part in item.get("content") or ():
                    if part.get("type") == "output_text":
                        texts.append(part.get("text") or "")
                    elif part.get("type") == "refusal":
                        detail = self.redact(str(part.get("refusal")))
                        raise ContentFiltered(
                            f"endpoint {self.endpoint!r}: {detail} (request {request_id})"
                        )
            elif item.get("type") == "function_call":
                fn = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
                calls.append({"id": item.get("call_id"), "type": "function", "function": fn})
        reason = (answer.incomplete_details or {}).get("reason")
        finish = "tool_calls" if calls else "stop"
        if answer.status == "incomplete":
            finish = "content_filter" if reason == "content_filter" else "length"
        usage = answer.usage or _ResponseUsage()
        cached = (usage.input_tokens_details or {}).get("cached_tokens")
        reasoning = (usage.output_tokens_details or {}).get("reasoning_tokens")
        return ProviderResponse(
            text="".join(texts),
            finish_reason=finish,
            tool_calls=calls or None,
            usage=Usage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cached_tokens=cached or 0,
                reasoning_tokens=reasoning or 0,
            ),
            model=answer.model or model,
            request_id=request_id,
            body=data,
            rate_limits=self.announced(resp),
        )

    def classify(
        self, resp: HTTPResponse, err: VendorError, message: str, model: str
    ) -> ProviderError | None:
        """OpenAI's documented codes that say more than the status: quota, context, filter."""
        if resp.status == 429 and _is_quota(err):
            return QuotaExceeded(message, status=resp.status)
        if resp.status in (400, 413) and _is_context(err):
            return ContextTooLong(message, status=resp.status)
        if resp.status == 400 and err.code == "content_filter":  # Azure OpenAI's prompt filter
            return ContentFiltered(message, status=resp.status)
        return None

    async def health(self) -> HealthStatus:
        """GET {base_url}/models: reachable, and the key is accepted."""
        return await self.probe("/models", self.headers())


_READERS = {
    "chat": OpenAIProvider._chat,
    "messages": OpenAIProvider._chat,
    "completions": OpenAIProvider._completions,
    "embeddings": OpenAIProvider._embeddings,
    "moderations": OpenAIProvider._moderations,
    "responses": OpenAIProvider._responses,
}


def _usage(usage: _Usage | None) -> Usage:
    usage = usage or {}
    prompt = usage.get("prompt_tokens_details") or {}
    output = usage.get("completion_tokens_details") or {}
    return Usage.counted(
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        prompt.get("cached_tokens"),
        output.get("reasoning_tokens"),
    )


def _is_quota(err: VendorError) -> bool:
    return err.type in QUOTA_CODES or err.code in QUOTA_CODES


def _is_context(err: VendorError) -> bool:
    return (
        err.code in CONTEXT_CODES
        or err.type in CONTEXT_CODES
        or bool(_CONTEXT_TEXT.search(err.message))
    )
