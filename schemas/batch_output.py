"""Results written as the batch files users know: OpenAI batch output lines, whose `body` is the
provider's answer unchanged, and Anthropic Message Batches result lines."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from schemas import vectors
from schemas.result import ErrorInfo, LLMResult

#: OpenAI finish_reason -> Anthropic stop_reason, for answers written in Anthropic's format.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def request_line_id(batch_id: str, key: str) -> str:
    """Stable `batch_req_...` id, so re-exporting a batch gives identical files."""
    digest = hashlib.blake2b(f"{batch_id}\0{key}".encode(), digest_size=12).hexdigest()
    return f"batch_req_{digest}"


def answer_body(result: LLMResult) -> dict[str, Any] | None:
    """The provider's body as received, embedding vectors back in the format it sent them."""
    body = result.body
    if body is not None and result.vectors == "float":
        return vectors.unpack(body)
    return body


def _success_line(
    line_id: str, custom_id: str | None, request_id: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    response = {"status_code": 200, "request_id": request_id or line_id, "body": body}
    return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}


def to_openai_line(result: LLMResult, key: str) -> dict[str, Any]:
    """One line of an OpenAI batch output file (success) or error file (anything else)."""
    line_id = request_line_id(result.batch_id, key)
    if result.status == "succeeded":
        body = answer_body(result) if result.kind != "messages" else None
        if body is None:
            body = chat_completion(result, line_id)
        return _success_line(line_id, result.custom_id, result.request_id, body)
    error = result.error
    if error is not None and error.status is not None:  # the provider answered with an error
        response = {
            "status_code": error.status,
            "request_id": result.request_id or line_id,
            "body": error_body(error),
        }
        return {"id": line_id, "custom_id": result.custom_id, "response": response, "error": None}
    code = error.code if error else result.status
    message = error.message if error else result.status
    out: dict[str, Any] = {"code": code, "message": message}
    if error is not None and error.line is not None:
        out["line"] = error.line
    return {"id": line_id, "custom_id": result.custom_id, "response": None, "error": out}


#: A stored result (`LLMResult.json_bytes`: every field, in declaration order) around its body:
#: the fields before it, and the fields after it.
_FIELDS = tuple(LLMResult.model_fields)
_HEAD = _FIELDS[: _FIELDS.index("body")]
_TAIL = _FIELDS[_FIELDS.index("body") + 1 :]
_BODY_KEY = b',"body":{'
_AFTER_BODY_KEY = b',"%s":' % _TAIL[0].encode()
#: The fields after the body read from the stored JSON (up to request_id), and the next key.
_TAIL_READ = _TAIL[: _TAIL.index("request_id") + 1]
_CUT_KEY = b',"%s":' % _TAIL[len(_TAIL_READ)].encode()
#: `_success_line` as orjson writes it: id, custom_id, request_id, body.
_SUCCESS_LINE = (
    b'{"id":"%s","custom_id":%s,"response":{"status_code":200,"request_id":%s,"body":%s},'
    b'"error":null}\n'
)


def stored_openai_success(raw: bytes, key: str) -> bytes | None:
    """`to_openai_line` of a stored result as its JSON line (newline included), for the
    common case only: a success whose body is kept as the provider sent it. None otherwise
    (build the model and use `to_openai_line`).

    The body's bytes go into the line as stored: parsing and writing them again was most of
    a collector's CPU per line (#22). orjson would write them back as they are, as they were
    written from a dict by orjson (or by pydantic, which writes strings and floats alike); the
    exception, an integer past 64 bits (orjson reads it as a float), is in no body read by
    orjson, as every provider's is. Only the fields around the body are parsed: the document
    cut before its first `,"body":{` (JSON only if cut at its top level, not in a tool call),
    and the fields from the key after the body up to request_id. A document written from a
    model holds its fields in order, each once, so the body ends where the next field's key
    is, when that key is nowhere else after the body's start (else None: a nested key of that
    name in the body, the error or the extras). A document of other fields or another order
    gives None.
    """
    start = raw.find(_BODY_KEY)
    end = raw.find(_AFTER_BODY_KEY, start + 1)
    cut = raw.find(_CUT_KEY, end)
    if start < 0 or end < 0 or cut < 0 or raw.find(_AFTER_BODY_KEY, end + 1) >= 0:
        return None
    try:
        head = orjson.loads(raw[:start] + b"}")
        tail = orjson.loads(b"{" + raw[end + 1 : cut] + b"}")
    except orjson.JSONDecodeError:
        return None
    if (
        tuple(head) != _HEAD
        or tuple(tail) != _TAIL_READ
        or head["status"] != "succeeded"
        or head["kind"] == "messages"
        or tail["vectors"] == "float"
    ):
        return None
    line_id = request_line_id(head["batch_id"], key)
    return _SUCCESS_LINE % (
        line_id.encode(),
        orjson.dumps(head["custom_id"]),
        orjson.dumps(tail["request_id"] or line_id),
        raw[start + len(_BODY_KEY) - 1 : end],
    )


#: OpenAI's error `type` by HTTP status, for a provider error body not in OpenAI's shape.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "unprocessable_entity_error",
    429: "rate_limit_error",
}


def error_body(error: ErrorInfo) -> dict[str, Any]:
    """The `body` of an error line: the provider's own when it is OpenAI's `{"error": {...}}`
    shape, else that shape built from the error (status decides the type)."""
    body = error.body
    if body is not None and isinstance(body.get("error"), dict):
        return body
    status = error.status or 500
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}


def chat_completion(result: LLMResult, line_id: str) -> dict[str, Any]:
    """A chat.completion built from the normalised fields, for an answer that has no OpenAI
    body of its own (an Anthropic-format answer, or a result stored without one)."""
    usage = result.usage
    message: dict[str, Any] = {"role": "assistant", "content": result.output, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    out: dict[str, Any] = {
        "id": f"chatcmpl-{line_id[10:]}",
        "object": "chat.completion",
        "created": int(result.timings.finished_at or 0),
        "model": result.model or "",
        "choices": [
            {
                "index": 0,
                "message": message,
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
    if usage.cached_tokens:
        out["usage"]["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["usage"]["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def to_anthropic_line(result: LLMResult) -> dict[str, Any]:
    """One line of an Anthropic Message Batches results file."""
    if result.status == "succeeded":
        message = result.body if result.kind == "messages" and result.body else None
        outcome: dict[str, Any] = {
            "type": "succeeded",
            "message": message or anthropic_message(result),
        }
    elif result.status == "errored":
        error = result.error
        detail = {
            "type": error.code if error else "api_error",
            "message": error.message if error else "error",
        }
        outcome = {"type": "errored", "error": {"type": "error", "error": detail}}
    else:
        outcome = {"type": "canceled" if result.status == "cancelled" else "expired"}
    return {"custom_id": result.custom_id, "result": outcome}


def anthropic_message(result: LLMResult) -> dict[str, Any]:
    """An Anthropic `message` built from the normalised fields (text and tool_use blocks)."""
    content: list[dict[str, Any]] = []
    if result.output:
        content.append({"type": "text", "text": result.output})
    for call in result.tool_calls or ():
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {"arguments": fn.get("arguments")}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}
        )
    usage = result.usage
    return {
        "id": result.request_id or f"msg_{result.batch_id}_{result.custom_id}",
        "type": "message",
        "role": "assistant",
        "model": result.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(result.finish_reason or "stop", result.finish_reason),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens - usage.cached_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
        },
    }


def native_line(result: LLMResult) -> dict[str, Any]:
    """The result object itself, its body's vectors as the provider sent them."""
    data = result.model_dump(mode="json", exclude_none=False)
    if result.vectors == "float" and result.body is not None:
        data["body"] = vectors.unpack(result.body)
    return data
