"""The fake server's Ollama format: /api/chat (NDJSON unless stream is false), /api/tags."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from providers.fake_server.faults import Fault, WindowState
from providers.fake_server.wire import (
    BadRequest,
    Call,
    Reply,
    Wire,
    html_reply,
    json_reply,
    text_of,
)
from providers.mock import estimate_tokens

#: kind -> (status, error text). Ollama errors are only `{"error": "..."}`.
ERRORS: dict[str, tuple[int, str]] = {
    "rate_limited": (429, "too many requests"),
    "quota": (402, "payment required: usage limit reached"),
    "auth": (401, "unauthorized"),
    "forbidden": (403, "forbidden"),
    "not_found": (404, "model '{model}' not found"),
    "bad_request": (400, "invalid request"),
    "context_length": (400, "the input length exceeds the context length"),
    "too_large": (413, "request entity too large"),
    "server_error": (500, "llama runner process has terminated: exit status 2"),
    "overloaded": (503, "server busy, please try again.  maximum pending requests exceeded"),
}
HTML = {"bad_gateway": 502, "unavailable": 503, "gateway_timeout": 504}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OllamaWire(Wire):
    """POST /api/chat, GET /api/tags."""

    name = "ollama"
    chat_path = "/api/chat"
    models_path = "/api/tags"

    def parse(self, body: Any, headers: CIMultiDictProxy[str]) -> Call:
        if not isinstance(body, dict):
            raise BadRequest("invalid character looking for beginning of value")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required")
        raw = body.get("messages") or []
        if not isinstance(raw, list):
            raise BadRequest("json: cannot unmarshal messages")
        messages = []
        for msg in raw:
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise BadRequest("json: cannot unmarshal message")
            messages.append((msg["role"], text_of(msg.get("content", ""))))
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("json: cannot unmarshal options")
        num_predict = options.get("num_predict")
        max_tokens = num_predict if isinstance(num_predict, int) and num_predict > 0 else None
        stream = body.get("stream", True) is not False
        return Call(model, messages, max_tokens, stream=stream, key=self.key(headers))

    def key(self, headers: CIMultiDictProxy[str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() or None

    def success(self, call: Call, fault: Fault, text: str, window: WindowState | None) -> Reply:
        prompt = fault.input_tokens if fault.input_tokens is not None else call.input_tokens
        output = fault.output_tokens if fault.output_tokens is not None else estimate_tokens(text)
        done_reason = fault.finish_reason or ("stop" if call.messages else "load")
        final = {
            "model": call.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": "" if call.stream else text},
            "done_reason": done_reason,
            "done": True,
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 1_000_000,
            "eval_count": output,
            "eval_duration": 3_000_000,
        }
        if not call.stream:
            return json_reply(200, final)
        chunk = {
            "model": call.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": text},
            "done": False,
        }
        lines = orjson.dumps(chunk) + b"\n" + orjson.dumps(final) + b"\n"
        return Reply(200, lines, content_type="application/x-ndjson")

    def error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
        if kind in HTML and fault.message is None:
            return html_reply(fault.status or HTML[kind])
        status, template = ERRORS.get(kind, ERRORS["server_error"])
        message = fault.message or template.format(model=call.model if call else "unknown")
        return json_reply(fault.status or status, {"error": message})

    def limit_headers(self, window: WindowState) -> dict[str, str]:
        return {}

    def models(self, names: list[str]) -> Reply:
        models = [
            {
                "name": n,
                "model": n,
                "modified_at": _now(),
                "size": 2_019_393_189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B"},
            }
            for n in names
        ]
        return json_reply(200, {"models": models})
