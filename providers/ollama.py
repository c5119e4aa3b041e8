"""Ollama's native chat and embed APIs (stream off), with the model-loading options a local
server needs."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

from providers.base import Capabilities, HealthStatus, ProviderResponse
from providers.errors import ContextTooLong, InvalidRequest, ProviderError, Unsupported
from providers.headers import parse_duration_s
from providers.http import BaseURL, HTTPConfig, HTTPProvider
from providers.http_response import HTTPResponse, VendorError
from providers.translate import ollama
from schemas.request import LLMRequest
from schemas.result import Usage

_MISSING_MODEL = re.compile(r"model ['\"]?([^'\"]+?)['\"]? not found")
_CONTEXT_TEXT = re.compile(r"context (length|window|size)", re.IGNORECASE)
#: Ollama's 400 to `think` for a model without thinking ("<model>" does not support thinking).
_NO_THINKING = b"does not support thinking"


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
    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None


class _ChatResponse(BaseModel):
    model: str | None = None
    message: _ChatMessage
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None


class _EmbedResponse(BaseModel):
    model: str | None = None
    embeddings: list[Any] = Field(min_length=1)
    prompt_eval_count: int | None = None


class OllamaProvider(HTTPProvider):
    """POST {base_url}/api/chat (stream false) and /api/embed; OpenAI chat and embeddings
    requests are translated, their answers written back in OpenAI's format."""

    name = "ollama"
    capabilities = Capabilities(
        kinds=frozenset({"chat", "embeddings"}),
        features=frozenset({"images", "tools", "json_object", "json_schema"}),
        strict_schema=True,
        max_context_tokens=8192,
    )
    Config = OllamaConfig
    options: OllamaConfig

    def vendor_headers(self) -> dict[str, str]:
        """Bearer auth when a key is set (ollama.com, proxies)."""
        headers = {}
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def model_options(self) -> dict[str, Any]:
        """The endpoint's model-loading options (`num_ctx`, `num_gpu`)."""
        opts = {"num_ctx": self.options.num_ctx, "num_gpu": self.options.num_gpu}
        return {k: v for k, v in opts.items() if v is not None}

    def body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        """The native body: sampling and loading settings in `options`, as Ollama wants them."""
        if request.kind == "embeddings":
            body = ollama.to_embed(request.body, model, self.model_options())
        elif request.kind == "chat":
            body = ollama.to_chat(request.body, model, self.model_options())
        else:
            raise Unsupported(f"endpoint {self.endpoint!r} (ollama): {request.kind} requests")
        if self.options.keep_alive is not None:
            body.setdefault("keep_alive", self.options.keep_alive)
        return body

    def translates(self, request: LLMRequest) -> bool:
        """Every request is translated to the native API."""
        return True

    def check_translation(self, request: LLMRequest) -> None:
        """Whether the request translates (inline images only...)."""
        self.body(request, "")

    async def generate(self, request: LLMRequest, model: str) -> ProviderResponse:
        """One chat turn or one embedding call; a missing model says how to pull it."""
        path = "/api/embed" if request.kind == "embeddings" else "/api/chat"
        body = self.body(request, model)
        resp = await self.post(path, request.custom_id, body)
        if resp.status == 400 and "think" in body and _NO_THINKING in resp.body:
            # reasoning_effort is a hint: a model that cannot think answers without it.
            del body["think"]
            resp = await self.post(path, request.custom_id, body)
        if not resp.ok:
            raise self.failure(resp, model)
        if request.kind == "embeddings":
            data, embed = self.parse_body(resp, _EmbedResponse)
            fmt = request.body.get("encoding_format") or "float"
            return ProviderResponse(
                finish_reason=None,
                usage=Usage(input_tokens=embed.prompt_eval_count or 0),
                model=embed.model or model,
                rate_limits=self.announced(resp),
                body=ollama.to_embeddings_answer(data, model, fmt),
            )
        data, chat = self.parse_body(resp, _ChatResponse)
        completion = ollama.to_chat_answer(data, model)
        choice = completion["choices"][0]
        return ProviderResponse(
            text=chat.message.content,
            finish_reason=choice["finish_reason"],
            tool_calls=choice["message"].get("tool_calls"),
            usage=Usage(
                input_tokens=chat.prompt_eval_count or 0, output_tokens=chat.eval_count or 0
            ),
            model=chat.model or model,
            rate_limits=self.announced(resp),
            body=completion,
        )

    def classify(
        self, resp: HTTPResponse, err: VendorError, message: str, model: str
    ) -> ProviderError | None:
        """Ollama errors are `{"error": "..."}`: the text refines a 404 (how to pull the
        model) and a 400 (context); the status decides the rest."""
        if resp.status == 404:
            found = _MISSING_MODEL.search(err.message)
            name = found.group(1) if found else model
            return InvalidRequest(
                f"{message} — run `ollama pull {name}` on {self.options.base_url}",
                status=404,
            )
        if resp.status == 400 and _CONTEXT_TEXT.search(err.message):
            return ContextTooLong(message, status=400)
        return None

    async def health(self) -> HealthStatus:
        """GET {base_url}/api/tags: the server is up and lists its models."""
        return await self.probe("/api/tags", self.headers())
