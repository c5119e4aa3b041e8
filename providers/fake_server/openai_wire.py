"""The fake server's OpenAI Chat Completions format: bodies, error codes and x-ratelimit-*."""

from __future__ import annotations

import math
import time
from typing import Any

from multidict import CIMultiDictProxy

from providers.fake_server.faults import Fault, WindowState, go_duration
from providers.fake_server.wire import (
    BadRequest,
    Call,
    Reply,
    Wire,
    html_reply,
    json_reply,
    messages_of,
    request_id,
)
from providers.mock import estimate_tokens

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
#: Kinds a proxy in front of the API answers, with an HTML body.
HTML = {"too_large": 413, "bad_gateway": 502, "unavailable": 503, "gateway_timeout": 504}


def mask(key: str | None) -> str:
    """How OpenAI echoes a wrong key: its start and end only."""
    if not key:
        return "''"
    return f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 8 else "****"


class OpenAIWire(Wire):
    """POST /v1/chat/completions, GET /v1/models."""

    name = "openai"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    def parse(self, body: Any, headers: CIMultiDictProxy[str]) -> Call:
        if not isinstance(body, dict):
            raise BadRequest("We could not parse the JSON body of your request.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter")
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by the fake server")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise BadRequest(f"Invalid 'max_tokens': integer below minimum value ({max_tokens}).")
        return Call(model, messages_of(body.get("messages")), max_tokens, key=self.key(headers))

    def key(self, headers: CIMultiDictProxy[str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() or None

    def success(self, call: Call, fault: Fault, text: str, window: WindowState | None) -> Reply:
        filtered = fault.kind == "content_filter"
        prompt = fault.input_tokens if fault.input_tokens is not None else call.input_tokens
        output = fault.output_tokens if fault.output_tokens is not None else estimate_tokens(text)
        rid = request_id()
        body = {
            "id": f"chatcmpl-{rid[4:]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None if filtered else text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "content_filter"
                    if filtered
                    else fault.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "total_tokens": prompt + output,
                "prompt_tokens_details": {"cached_tokens": fault.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        headers = {"x-request-id": rid, "openai-version": "2020-10-01", "openai-processing-ms": "1"}
        if window is not None:
            headers.update(self.limit_headers(window))
        return json_reply(200, body, headers)

    def error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
        if kind in HTML and fault.message is None and fault.error_type is None:
            return html_reply(fault.status or HTML[kind])
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
