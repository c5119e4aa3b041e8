"""Ollama's native chat API (stream off), with the model-loading options a local server needs."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

from providers.base import Capabilities, HealthStatus, ProviderResponse
from providers.errors import ContextTooLong, InvalidRequest, ProviderError
from providers.headers import parse_duration_s
from providers.http import (
    BaseURL,
    HTTPConfig,
    HTTPProvider,
    HTTPResponse,
    error_for_status,
    parse_body,
    reserved_params,
    vendor_error,
)
from schemas.request import LLMRequest
from schemas.result import Usage

#: Keys of `params` that belong at the top of the body; every other key is a model option.
TOP_LEVEL_PARAMS = frozenset({"format", "tools", "think", "keep_alive", "options"})
_RESERVED = frozenset({"model", "messages", "stream"})
_MISSING_MODEL = re.compile(r"model ['\"]?([^'\"]+?)['\"]? not found")
_CONTEXT_TEXT = re.compile(r"context (length|window|size)", re.IGNORECASE)


class OllamaConfig(HTTPConfig):
    """Endpoint options: where Ollama runs and how it should load the model."""

    base_url: BaseURL = "http://127.0.0.1:11434"
    num_ctx: int | None = Field(default=None, ge=1)
    num_gpu: int | None = Field(default=None, ge=-1)
    #: How long the model stays loaded: a duration ("5m", "1h") or seconds; negative = forever.
    keep_alive: str | int | None = None

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and parse_duration_s(value.removeprefix("-")) is None:
            raise ValueError('must be a duration like "5m", "1h30m" or a number of seconds')
        return value


class _ChatMessage(BaseModel):
    content: str


class _ChatResponse(BaseModel):
    model: str | None = None
    message: _ChatMessage
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None


class OllamaProvider(HTTPProvider):
    """POST {base_url}/api/chat with stream false; usage from prompt_eval_count / eval_count."""

    name = "ollama"
    capabilities = Capabilities(json_mode=True, tools=True, max_context_tokens=8192)
    Config = OllamaConfig
    options: OllamaConfig

    def headers(self, custom_id: str | None = None) -> dict[str, str]:
        """Shared headers, plus Bearer auth when a key is set (ollama.com, proxies)."""
        headers = self.base_headers(custom_id)
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        """The chat body: sampling and loading settings go in `options`, as Ollama wants them."""
        reserved_params(request.params, _RESERVED, self.endpoint)
        opts = self.options
        options: dict[str, Any] = {
            "num_ctx": opts.num_ctx,
            "num_gpu": opts.num_gpu,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "num_predict": request.max_tokens,
            "stop": [request.stop] if isinstance(request.stop, str) else request.stop,
        }
        options = {k: v for k, v in options.items() if v is not None}
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": False,
        }
        if opts.keep_alive is not None:
            body["keep_alive"] = opts.keep_alive
        fmt = request.response_format or {}
        if fmt.get("type") == "json_object":
            body["format"] = "json"
        elif fmt.get("type") == "json_schema":
            body["format"] = (fmt.get("json_schema") or {}).get("schema", "json")
        for key, value in request.params.items():
            if key == "options" and isinstance(value, dict):
                options.update(value)
            elif key in TOP_LEVEL_PARAMS:
                body[key] = value
            else:
                options[key] = value
        if options:
            body["options"] = options
        return body

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """One chat turn; a missing model says how to pull it."""
        resp = await self.send(
            "POST", "/api/chat", self.headers(request.custom_id), self.body(request, model)
        )
        if not resp.ok:
            raise self.error(resp, model)
        chat = parse_body(resp, _ChatResponse, self.endpoint)
        return ProviderResponse(
            text=chat.message.content,
            finish_reason=chat.done_reason or "stop",
            usage=Usage(
                input_tokens=chat.prompt_eval_count or 0, output_tokens=chat.eval_count or 0
            ),
            model=chat.model or model,
            rate_limits=self.announced(resp),
        )

    def error(self, resp: HTTPResponse, model: str) -> ProviderError:
        """Ollama errors are `{"error": "..."}`: the status decides, the text refines."""
        err = vendor_error(resp.body)
        message = self.describe(resp, err)
        if resp.status == 404:
            found = _MISSING_MODEL.search(err.message)
            name = found.group(1) if found else model
            return InvalidRequest(
                f"{message} — run `ollama pull {name}` on {self.options.base_url}",
                status=404,
            )
        if resp.status == 400 and _CONTEXT_TEXT.search(err.message):
            return ContextTooLong(message, status=400)
        return error_for_status(message, resp)

    async def health(self) -> HealthStatus:
        """GET {base_url}/api/tags: the server is up and lists its models."""
        return await self.probe("/api/tags", self.headers())
