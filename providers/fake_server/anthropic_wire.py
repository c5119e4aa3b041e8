"""The fake server's Anthropic Messages format: error types, request-id, anthropic-ratelimit-*."""

from __future__ import annotations

import base64
import binascii
import math
import time
from datetime import UTC, datetime
from typing import Any

from multidict import CIMultiDictProxy

from providers import answers
from providers.fake_server.faults import Fault, WindowState
from providers.fake_server.wire import (
    BadRequest,
    Call,
    Reply,
    Wire,
    json_reply,
    messages_of,
    request_id,
    text_of,
)

#: kind -> (status, error.type, message) as the Anthropic errors page documents them.
ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limited": (
        429,
        "rate_limit_error",
        "This request would exceed your organization's rate limit. Please try again later.",
    ),
    "quota": (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
        "Billing to upgrade or purchase credits.",
    ),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "forbidden": (
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "not_found": (404, "not_found_error", "model: {model}"),
    "bad_request": (400, "invalid_request_error", "Invalid request."),
    "context_length": (
        400,
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    ),
    "too_large": (
        413,
        "request_too_large",
        "Request exceeds the maximum allowed number of bytes.",
    ),
    "server_error": (500, "api_error", "Internal server error"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def rfc3339_in(seconds: float) -> str:
    """The moment `seconds` from now, as anthropic-ratelimit-*-reset writes it."""
    when = datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)  # never early
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


#: Image media types the Messages API takes (anthropic-sdk-python `Base64ImageSourceParam`).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class AnthropicWire(Wire):
    """POST /v1/messages, GET /v1/models."""

    name = "anthropic"
    paths = {"/v1/messages": "messages"}
    models_path = "/v1/models"
    not_an_object = "Request body must be a JSON object"
    no_model = "model: Field required"

    def parse(self, body: Any, headers: CIMultiDictProxy[str], kind: str = "messages") -> Call:
        if not isinstance(body, dict):
            raise BadRequest(self.not_an_object)
        if "anthropic-version" not in headers:
            raise BadRequest("anthropic-version: header is required")
        model = self.model_of(body)
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("max_tokens: Field required")
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by the fake server")
        turns = messages_of(body.get("messages"))
        if any(role not in ("user", "assistant") for role, _ in turns):
            raise BadRequest(
                "messages: Unexpected role. The Messages API accepts a top-level `system` "
                'parameter, not "system" as an input message role.'
            )
        _check_blocks(body["messages"])
        _check_thinking(body, max_tokens)
        for i, tool in enumerate(body.get("tools") or ()):
            if "name" not in tool or "input_schema" not in tool:
                raise BadRequest(f"tools.{i}: name and input_schema are required")
        system = body.get("system")
        before = [("system", text_of(system))] if system else []
        return Call(model, before + turns, max_tokens, key=self.key(headers), kind=kind, body=body)

    def key(self, headers: CIMultiDictProxy[str]) -> str | None:
        return headers.get("x-api-key")

    def success(self, call: Call, fault: Fault, text: str, window: WindowState | None) -> Reply:
        refused = fault.kind == "content_filter"
        prompt, output = call.usage(fault, text)
        finish = fault.finish_reason or "stop"
        content: list[dict[str, Any]] = []
        thinking = call.body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled" and not refused:
            content.append({"type": "thinking", "thinking": "Let me see.", "signature": "sig"})
        tools = _scripted_tool_use(fault) or answers.forced_tool_use(call.body)
        if refused:
            stop = "refusal"
        elif tools:
            content += tools
            stop = "tool_use"
        else:
            content.append({"type": "text", "text": text})
            stop = STOP_REASONS.get(finish, finish)
        body = answers.anthropic_message(
            call.model,
            [] if refused else content,
            stop_reason=stop,
            input_tokens=prompt,
            output_tokens=output,
            cached_tokens=fault.cached_tokens,
        )
        headers = {"request-id": request_id()}
        if window is not None:
            headers.update(self.limit_headers(window))
        return json_reply(200, body, headers)

    def vendor_error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
        status, etype, template = ERRORS.get(kind, ERRORS["server_error"])
        error: dict[str, Any] = {
            "type": fault.error_type or etype,
            "message": fault.message or template.format(model=call.model if call else "unknown"),
        }
        if fault.error_code:
            error["details"] = {"error_code": fault.error_code}
        rid = request_id()
        body = {"type": "error", "error": error, "request_id": rid}
        return json_reply(fault.status or status, body, {"request-id": rid})

    def limit_headers(self, window: WindowState) -> dict[str, str]:
        headers: dict[str, str] = {}
        for dim, limit, left, reset in (
            ("requests", window.limit_requests, window.remaining_requests, window.reset_requests_s),
            ("tokens", window.limit_tokens, window.remaining_tokens, window.reset_tokens_s),
            ("input-tokens", window.limit_tokens, window.remaining_tokens, window.reset_tokens_s),
        ):
            if limit is not None:
                headers[f"anthropic-ratelimit-{dim}-limit"] = str(limit)
            if left is not None:
                headers[f"anthropic-ratelimit-{dim}-remaining"] = str(left)
            if reset is not None:
                headers[f"anthropic-ratelimit-{dim}-reset"] = rfc3339_in(reset)
        return headers

    def models(self, names: list[str]) -> Reply:
        created = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        data = [{"type": "model", "id": n, "display_name": n, "created_at": created} for n in names]
        first, last = (names[0], names[-1]) if names else (None, None)
        return json_reply(
            200, {"data": data, "has_more": False, "first_id": first, "last_id": last}
        )


def _check_blocks(messages: list[Any]) -> None:
    """What the Messages API rejects: unknown blocks, malformed images, and tool results that
    answer no tool_use of the assistant turn just before."""
    previous_calls: set[str] = set()
    for i, msg in enumerate(messages):
        content = msg.get("content")
        blocks = content if isinstance(content, list) else []
        calls: set[str] = set()
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "image":
                source = block.get("source") or {}
                if source.get("type") == "base64":
                    if source.get("media_type") not in IMAGE_TYPES:
                        raise BadRequest(f"{where}.source.media_type: must be one of {IMAGE_TYPES}")
                    try:
                        base64.b64decode(source.get("data", ""), validate=True)
                    except (binascii.Error, ValueError):
                        raise BadRequest(f"{where}.source.data: invalid base64") from None
                elif source.get("type") != "url" or not source.get("url"):
                    raise BadRequest(f"{where}.source: base64 or url source required")
            elif kind == "tool_use":
                if msg.get("role") != "assistant" or not isinstance(block.get("input"), dict):
                    raise BadRequest(
                        f"{where}: tool_use belongs to assistant turns, input an object"
                    )
                calls.add(block.get("id"))
            elif kind == "tool_result":
                if block.get("tool_use_id") not in previous_calls:
                    raise BadRequest(
                        f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message."
                    )
            elif kind not in ("text", "document", "thinking", "redacted_thinking"):
                raise BadRequest(f"{where}.type: unknown content block {kind!r}")
        previous_calls = calls


def _check_thinking(body: dict[str, Any], max_tokens: int) -> None:
    """What the Messages API rejects when extended thinking is on (Anthropic's extended
    thinking guide, "feature compatibility" and "extended thinking with tool use")."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise BadRequest(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if budget >= max_tokens:
        raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
    if body.get("temperature", 1) != 1:
        raise BadRequest("`temperature` may only be set to 1 when thinking is enabled")
    if "top_k" in body:
        raise BadRequest("`top_k` is not supported when thinking is enabled")
    top_p = body.get("top_p", 1)
    if isinstance(top_p, int | float) and top_p < 0.95:
        raise BadRequest("`top_p` must be greater than or equal to 0.95 when thinking is enabled")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise BadRequest("Thinking may not be enabled when tool_choice forces tool use.")
    assistant = [m for m in body["messages"] if m.get("role") == "assistant"]
    content = assistant[-1].get("content") if assistant else None
    blocks: list[Any] = content if isinstance(content, list) else []
    uses_tools = any(b.get("type") == "tool_use" for b in blocks)
    if uses_tools and blocks[0].get("type") not in ("thinking", "redacted_thinking"):
        raise BadRequest(
            "Expected `thinking` or `redacted_thinking`, but found "
            f"`{blocks[0].get('type')}`. When `thinking` is enabled, a final `assistant` "
            "message must start with a thinking block."
        )


def _scripted_tool_use(fault: Fault) -> list[dict[str, Any]] | None:
    if not fault.tool_calls:
        return None
    return [
        {
            "type": "tool_use",
            "id": "toolu_" + request_id("")[:20],
            "name": spec.get("name", ""),
            "input": spec.get("arguments") or {},
        }
        for spec in fault.tool_calls
    ]
