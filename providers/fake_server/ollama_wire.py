"""The fake server's Ollama format: /api/chat (NDJSON unless stream is false), /api/tags."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from providers import answers
from providers.fake_server.faults import Fault, WindowState
from providers.fake_server.wire import (
    BadRequest,
    Call,
    Reply,
    Wire,
    json_reply,
    text_of,
)

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
#: Model families that think; Ollama answers 400 to `think` for any other model.
THINKING_MODELS = ("qwen3", "deepseek-r1", "gpt-oss", "magistral", "think")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OllamaWire(Wire):
    """POST /api/chat and /api/embed, GET /api/tags."""

    name = "ollama"
    paths = {"/api/chat": "chat", "/api/embed": "embeddings"}
    models_path = "/api/tags"
    not_an_object = "invalid character looking for beginning of value"
    no_model = "model is required"

    def worded(self, fault: Fault) -> bool:
        """Ollama errors have no type: only a message makes one its own."""
        return fault.message is not None

    def parse(self, body: Any, headers: CIMultiDictProxy[str], kind: str = "chat") -> Call:
        model = self.model_of(body)
        if kind == "embeddings":
            value = body.get("input")
            inputs = [value] if isinstance(value, str) else value
            if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
                raise BadRequest("invalid input type")
            return Call(model, [], None, key=self.key(headers), kind=kind, body=body, inputs=inputs)
        raw = body.get("messages") or []
        if not isinstance(raw, list):
            raise BadRequest("json: cannot unmarshal messages")
        if body.get("think") and not any(f in model for f in THINKING_MODELS):
            raise BadRequest(f"{orjson.dumps(model).decode()} does not support thinking")
        messages = []
        for msg in raw:
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise BadRequest("json: cannot unmarshal message")
            if not isinstance(msg.get("content", ""), str):
                raise BadRequest("json: cannot unmarshal array into Go struct field .content")
            for image in msg.get("images") or ():
                try:
                    base64.b64decode(image, validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise BadRequest("illegal base64 data in images") from None
            for call in msg.get("tool_calls") or ():
                if not isinstance((call.get("function") or {}).get("arguments"), dict):
                    raise BadRequest("json: cannot unmarshal string into arguments")
            messages.append((msg["role"], text_of(msg.get("content", ""))))
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("json: cannot unmarshal options")
        num_predict = options.get("num_predict")
        max_tokens = num_predict if isinstance(num_predict, int) and num_predict > 0 else None
        stream = body.get("stream", True) is not False
        return Call(
            model, messages, max_tokens, stream=stream, key=self.key(headers), kind=kind, body=body
        )

    def key(self, headers: CIMultiDictProxy[str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() or None

    def success(self, call: Call, fault: Fault, text: str, window: WindowState | None) -> Reply:
        prompt, output = call.usage(fault, text)
        if call.kind == "embeddings":
            dims = call.body.get("dimensions") or self.embedding_dimensions
            vectors = [answers.fake_vector(t, dims) for t in call.inputs]
            return json_reply(
                200,
                {
                    "model": call.model,
                    "embeddings": vectors,
                    "total_duration": 14_143_917,
                    "load_duration": 1_019_500,
                    "prompt_eval_count": prompt,
                },
            )
        done_reason = fault.finish_reason or ("stop" if call.messages else "load")
        message: dict[str, Any] = {"role": "assistant", "content": "" if call.stream else text}
        if fault.tool_calls:
            message["content"] = ""
            message["tool_calls"] = [
                {
                    "function": {
                        "index": i,
                        "name": c.get("name"),
                        "arguments": c.get("arguments") or {},
                    }
                }
                for i, c in enumerate(fault.tool_calls)
            ]
        final = {
            "model": call.model,
            "created_at": _now(),
            "message": message,
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

    def vendor_error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
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
