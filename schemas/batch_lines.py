"""Input lines as users already have them (OpenAI / Anthropic batch files, or native requests)
mapped to `LLMRequest`, and results mapped back to the OpenAI batch output format."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.request import LLMRequest
from schemas.result import LLMResult

CHAT_URL = "/v1/chat/completions"
_LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})

#: Body fields that map onto `LLMRequest` fields; everything else is carried in `params`.
_KNOWN_BODY = {
    "model",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "response_format",
    "metadata",
    "tier",
    "route",
}


_VALIDATE = LLMRequest.__pydantic_validator__.validate_python


class LineError(ValueError):
    """An input line that cannot become a request; names the line and the field."""

    def __init__(self, line: int, field: str | None, message: str, custom_id: str | None = None):
        self.line = line
        self.field = field
        self.custom_id = custom_id
        self.reason = message
        where = f"{field}: " if field else ""
        super().__init__(f"line {line}: {where}{message}")


def parse_line(raw: bytes | str, line: int) -> LLMRequest:
    """Turn one JSONL line into a request, or raise `LineError` saying exactly what is wrong."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(line, None, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LineError(line, None, f"must be a JSON object, got {type(obj).__name__}")
    custom_id = obj.get("custom_id")
    cid = custom_id if isinstance(custom_id, str) else None
    if "custom_id" not in obj:
        raise LineError(line, "custom_id", "field required")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(line, "custom_id", "must be a non-empty string")
    if "body" in obj or "url" in obj or "method" in obj:
        return _from_openai(obj, line, cid)
    if "params" in obj:
        return _from_anthropic(obj, line, cid)
    return _validate(obj, line, "", cid)


def _from_openai(obj: dict[str, Any], line: int, cid: str | None) -> LLMRequest:
    extra = obj.keys() - _LINE_KEYS
    if extra:
        raise LineError(line, sorted(extra)[0], "unknown field in an OpenAI batch line", cid)
    if obj.get("method", "POST") != "POST":
        raise LineError(line, "method", f"must be POST, got {obj.get('method')!r}", cid)
    if obj.get("url") != CHAT_URL:
        raise LineError(line, "url", f"must be {CHAT_URL}, got {obj.get('url')!r}", cid)
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError(line, "body", "must be a JSON object", cid)
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for k, v in body.items():
        (fields if k in _KNOWN_BODY else params)[k] = v
    if "max_completion_tokens" in params:
        most = params.pop("max_completion_tokens")
        fields.setdefault("max_tokens", most)
    fields["params"] = params
    fields["messages"] = _openai_messages(body.get("messages"), line, cid)
    fields["custom_id"] = obj["custom_id"]
    return _validate(fields, line, "body.", cid)


def _openai_messages(messages: Any, line: int, cid: str | None) -> Any:
    """Flatten text content parts and map `developer` to `system`; leave the rest to pydantic."""
    if not isinstance(messages, list):
        return messages
    if all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") != "developer"
        for m in messages
    ):
        return messages  # the common case: nothing to rewrite, no copies
    out: list[Any] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        msg = dict(msg)
        if msg.get("role") == "developer":
            msg["role"] = "system"
        content = msg.get("content")
        if isinstance(content, list):
            texts: list[Any] = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise LineError(
                        line,
                        f"body.messages.{i}.content",
                        "only text content parts are supported",
                        cid,
                    )
                texts.append(part.get("text"))
            if not all(isinstance(t, str) for t in texts):
                raise LineError(line, f"body.messages.{i}.content", "text part without text", cid)
            msg["content"] = "".join(str(t) for t in texts)
        out.append(msg)
    return out


def _from_anthropic(obj: dict[str, Any], line: int, cid: str | None) -> LLMRequest:
    params = obj.get("params")
    if not isinstance(params, dict):
        raise LineError(line, "params", "must be a JSON object", cid)
    fields = {k: v for k, v in params.items() if k in _KNOWN_BODY | {"system", "stop_sequences"}}
    messages = (
        list(params.get("messages") or [])
        if isinstance(params.get("messages"), list)
        else params.get("messages")
    )
    system = fields.pop("system", None)
    if isinstance(system, str) and isinstance(messages, list):
        messages = [{"role": "system", "content": system}, *messages]
    if "stop_sequences" in fields:
        fields["stop"] = fields.pop("stop_sequences")
    fields["messages"] = _openai_messages(messages, line, cid)
    fields["params"] = {
        k: v for k, v in params.items() if k not in fields and k not in {"system", "stop_sequences"}
    }
    fields["custom_id"] = obj["custom_id"]
    return _validate(fields, line, "params.", cid)


def _validate(fields: dict[str, Any], line: int, prefix: str, cid: str | None) -> LLMRequest:
    try:
        # The validator itself: model_validate's Python wrapper is a tenth of a line's cost.
        request: LLMRequest = _VALIDATE(fields)
        return request
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = loc if loc == "custom_id" else f"{prefix}{loc}"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise LineError(line, field, f"{err['msg']}{more}", cid) from None


def request_line_id(batch_id: str, key: str) -> str:
    """Stable `batch_req_...` id, so re-exporting a batch gives identical files."""
    digest = hashlib.blake2b(f"{batch_id}\0{key}".encode(), digest_size=12).hexdigest()
    return f"batch_req_{digest}"


def to_openai_line(result: LLMResult, key: str) -> dict[str, Any]:
    """One line of an OpenAI batch output file (success) or error file (anything else)."""
    line_id = request_line_id(result.batch_id, key)
    if result.status == "succeeded":
        usage = result.usage
        body = {
            "id": f"chatcmpl-{line_id[10:]}",
            "object": "chat.completion",
            "created": int(result.timings.finished_at or 0),
            "model": result.model or "",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.output, "refusal": None},
                    "logprobs": None,
                    "finish_reason": result.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }
        response = {"status_code": 200, "request_id": result.request_id or line_id, "body": body}
        return {"id": line_id, "custom_id": result.custom_id, "response": response, "error": None}
    error = result.error
    code = error.code if error else result.status
    message = error.message if error else result.status
    out: dict[str, Any] = {"code": code, "message": message}
    if error is not None and error.line is not None:
        out["line"] = error.line
    return {"id": line_id, "custom_id": result.custom_id, "response": None, "error": out}
