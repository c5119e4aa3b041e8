"""The fake server's OpenAI Chat Completions format: bodies, error codes and x-ratelimit-*."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from providers import answers
from providers.fake_server.faults import Fault, WindowState, go_duration
from providers.fake_server.wire import (
    BadRequest,
    Call,
    Reply,
    Wire,
    json_reply,
    messages_of,
    request_id,
)
from schemas.bodies import BodyError, check_body

#: kind -> (status, error.type, error.code, message) as OpenAI sends them.
ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limited": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-fake on requests per min (RPM). "
        "Please try again later.",
    ),
    "quota": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "auth": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: {masked}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "forbidden": (
        403,
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    "not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "bad_request": (400, "invalid_request_error", None, "{detail}"),
    "context_length": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 131072 tokens. Please reduce the length of the messages.",
    ),
    "server_error": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": (
        503,
        "service_unavailable_error",
        "server_is_overloaded",
        "The server is overloaded or not ready yet.",
    ),
}


def mask(key: str | None) -> str:
    """How OpenAI echoes a wrong key: its start and end only."""
    if not key:
        return "''"
    return f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 8 else "****"


class OpenAIWire(Wire):
    """POST /v1/chat/completions, /v1/embeddings, /v1/responses, /v1/completions,
    /v1/moderations; GET /v1/models."""

    name = "openai"
    paths = {
        "/v1/chat/completions": "chat",
        "/v1/embeddings": "embeddings",
        "/v1/responses": "responses",
        "/v1/completions": "completions",
        "/v1/moderations": "moderations",
    }
    models_path = "/v1/models"
    #: The proxy also answers an over-large body itself, before OpenAI sees it.
    proxy_pages = {"too_large": 413, **Wire.proxy_pages}
    not_an_object = "We could not parse the JSON body of your request."
    no_model = "you must provide a model parameter"

    def parse(self, body: Any, headers: CIMultiDictProxy[str], kind: str = "chat") -> Call:
        model = self.model_of(body)
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by the fake server")
        try:  # the documented shape of each body, as openai-python types it
            check_body(kind, body)  # type: ignore[arg-type]
        except BodyError as exc:
            raise BadRequest(f"Invalid '{exc.field}': {exc.reason}") from None
        key = self.key(headers)
        if kind == "chat":
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
            messages = messages_of(body.get("messages"))
            return Call(model, messages, max_tokens, key=key, kind=kind, body=body)
        if kind == "responses":
            inputs = [_response_text(body.get("input"))]
            limit = body.get("max_output_tokens")
            return Call(model, [], limit, key=key, kind=kind, body=body, inputs=inputs)
        source = body.get("prompt") if kind == "completions" else body.get("input")
        limit = body.get("max_tokens") if kind == "completions" else None
        inputs = answers.texts_of(source)
        return Call(model, [], limit, key=key, kind=kind, body=body, inputs=inputs)

    def key(self, headers: CIMultiDictProxy[str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() or None

    def success(self, call: Call, fault: Fault, text: str, window: WindowState | None) -> Reply:
        prompt, output = call.usage(fault, text)
        body = call.body
        answer: dict[str, Any] | None
        if call.kind == "embeddings":
            dims = body.get("dimensions") or self.embedding_dimensions
            fmt = body.get("encoding_format") or "float"
            answer = answers.embeddings_list(call.model, call.inputs, dims, fmt)
        elif call.kind == "moderations":
            answer = answers.moderation(call.model, call.inputs)
        elif call.kind in ("completions", "responses"):
            finish = fault.finish_reason or "stop"
            answer = answers.text_body(call.kind, call.model, text, prompt, output, finish)
        else:
            answer = self._chat(call, fault, text, prompt, output)
        rid = request_id()
        headers = {"x-request-id": rid, "openai-version": "2020-10-01", "openai-processing-ms": "1"}
        if window is not None:
            headers.update(self.limit_headers(window))
        return json_reply(200, answer, headers)

    def _chat(self, call: Call, fault: Fault, text: str, prompt: int, output: int) -> Any:
        filtered = fault.kind == "content_filter"
        calls = _scripted_calls(fault) or answers.forced_tool_calls(call.body)
        finish = fault.finish_reason or ("tool_calls" if calls else "stop")
        answer = answers.chat_completion(
            call.model,
            None if filtered or calls else text,
            prompt_tokens=prompt,
            completion_tokens=output,
            finish_reason="content_filter" if filtered else finish,
            tool_calls=None if filtered else calls,
            cached_tokens=fault.cached_tokens,
            reasoning_tokens=fault.reasoning_tokens,
        )
        for more in fault.choices or ():
            first = answer["choices"][0]
            message = {**first["message"], "content": more}
            answer["choices"].append({**first, "index": len(answer["choices"]), "message": message})
        return answer

    def vendor_error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
        status, etype, code, template = ERRORS.get(kind, ERRORS["server_error"])
        message = fault.message or template.format(
            model=call.model if call else "unknown",
            masked=mask(call.key if call else None),
            detail="Invalid request.",
        )
        error = {
            "message": message,
            "type": fault.error_type or etype,
            "param": "messages" if kind == "context_length" else None,
            "code": fault.error_code or code,
        }
        return json_reply(fault.status or status, {"error": error}, {"x-request-id": request_id()})

    def limit_headers(self, window: WindowState) -> dict[str, str]:
        headers = {}
        if window.reset_requests_s is not None:
            headers["x-ratelimit-reset-requests"] = go_duration(window.reset_requests_s)
        if window.reset_tokens_s is not None:
            headers["x-ratelimit-reset-tokens"] = go_duration(window.reset_tokens_s)
        values = {
            "x-ratelimit-limit-requests": window.limit_requests,
            "x-ratelimit-limit-tokens": window.limit_tokens,
            "x-ratelimit-remaining-requests": window.remaining_requests,
            "x-ratelimit-remaining-tokens": window.remaining_tokens,
        }
        headers.update({k: str(v) for k, v in values.items() if v is not None})
        return headers

    def models(self, names: list[str]) -> Reply:
        created = int(time.time())
        data = [{"id": n, "object": "model", "created": created, "owned_by": "fake"} for n in names]
        return json_reply(200, {"object": "list", "data": data})

    def limit_message(self, call: Call, window: WindowState, wait_s: float) -> str:
        if window.remaining_requests == 0 or window.limit_tokens is None:
            dim, limit = "requests per min (RPM)", window.limit_requests
        else:
            dim, limit = "tokens per min (TPM)", window.limit_tokens
        return (
            f"Rate limit reached for {call.model} in organization org-fake on {dim}: "
            f"Limit {limit}. Please try again in {math.ceil(wait_s * 1000)}ms."
        )


def _scripted_calls(fault: Fault) -> list[dict[str, Any]] | None:
    if not fault.tool_calls:
        return None
    return [
        {
            "id": f"call_{request_id('')[:12]}",
            "type": "function",
            "function": {
                "name": spec.get("name", ""),
                "arguments": orjson.dumps(spec.get("arguments") or {}).decode(),
            },
        }
        for spec in fault.tool_calls
    ]


def _response_text(value: Any) -> str:
    """The last user text of a Responses `input` (a string or a list of items)."""
    if isinstance(value, str):
        return value
    for item in reversed(value or ()):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
