"""Answer bodies as the vendors document them, for the fakes: the mock provider and the fake
server build every success body here, so both answer each endpoint kind the same way."""

from __future__ import annotations

import time
import uuid
import zlib
from functools import cache
from typing import Any

import orjson

from schemas import vectors
from schemas.tokens import estimate_tokens


def short_id() -> str:
    """24 hex digits for vendor-looking ids."""
    return uuid.uuid4().hex[:24]


def chat_completion(
    model: str,
    text: str | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    answer_id: str | None = None,
) -> dict[str, Any]:
    """An OpenAI `chat.completion` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{answer_id or short_id()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def forced_tool_calls(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The calls a fake model makes when a chat body forces a tool (`tool_choice` "required"
    or a named function): the named or first function, with arguments for its required
    properties."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        return None
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and "function" in t]
    if not tools:
        return None
    fn = tools[0]["function"]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        fn = next((t["function"] for t in tools if t["function"].get("name") == name), fn)
    arguments = orjson.dumps(example_arguments(fn.get("parameters"))).decode()
    call_id = "call_" + short_id()
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": arguments},
        }
    ]


def example_arguments(schema: Any) -> dict[str, Any]:
    """A value for each required property of a JSON Schema object (strings "x", numbers 1)."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for name in schema.get("required") or ():
        kind = (props.get(name) or {}).get("type")
        samples: dict[Any, Any] = {
            "integer": 1,
            "number": 1,
            "boolean": True,
            "array": [],
            "object": {},
        }
        out[name] = samples.get(kind, "x")
    return out


@cache
def _base_vector(dims: int) -> tuple[float, ...]:
    # Multiples of 1/1024: exact in float32, as a real embedding model's numbers are.
    return tuple(((i * 2654435761) % 1024) / 1024.0 - 0.5 for i in range(dims))


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic vector for a text: the same text always embeds the same way."""
    base = _base_vector(dims)
    shift = zlib.crc32(text.encode()) % dims
    return list(base[shift:] + base[:shift])


def embeddings_list(
    model: str, inputs: list[str], dims: int, encoding_format: str = "float"
) -> dict[str, Any]:
    """An OpenAI embeddings `list` object, one vector per input, in the asked encoding."""
    data = []
    for i, text in enumerate(inputs):
        vector: Any = fake_vector(text, dims)
        if encoding_format == "base64":
            vector = vectors.encode(vector)
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(estimate_tokens(t) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def texts_of(value: Any) -> list[str]:
    """The inputs of an embeddings / moderations body as texts (token arrays as their ids)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    if value and all(type(v) is int for v in value):
        return [" ".join(map(str, value))]
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.append(" ".join(map(str, item)))
        elif isinstance(item, dict):
            out.append(str(item.get("text", "")))
    return out


def response_object(
    model: str, text: str, *, input_tokens: int, output_tokens: int, status: str = "completed"
) -> dict[str, Any]:
    """An OpenAI Responses API `response` object with one output message."""
    rid = short_id()
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{rid}",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def text_completion(
    model: str, text: str, *, prompt_tokens: int, completion_tokens: int, finish: str = "stop"
) -> dict[str, Any]:
    """An OpenAI legacy `text_completion` object."""
    return {
        "id": f"cmpl-{short_id()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_body(
    kind: str, model: str, text: str, input_tokens: int, output_tokens: int, finish: str = "stop"
) -> dict[str, Any] | None:
    """The body of a text answer to a `responses` or `completions` request (a `length` finish
    is an incomplete response); None for other kinds, whose answers are built elsewhere."""
    if kind == "responses":
        status = "incomplete" if finish == "length" else "completed"
        return response_object(
            model, text, input_tokens=input_tokens, output_tokens=output_tokens, status=status
        )
    if kind == "completions":
        return text_completion(
            model, text, prompt_tokens=input_tokens, completion_tokens=output_tokens, finish=finish
        )
    return None


MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def moderation(model: str, inputs: list[str], flag_word: str = "attack") -> dict[str, Any]:
    """An OpenAI moderation object; an input containing `flag_word` is flagged for violence."""
    results = []
    for text in inputs:
        flagged = flag_word in text.lower()
        categories = {c: flagged and c == "violence" for c in MODERATION_CATEGORIES}
        scores = {c: (0.9 if categories[c] else 0.001) for c in MODERATION_CATEGORIES}
        results.append({"flagged": flagged, "categories": categories, "category_scores": scores})
    return {"id": f"modr-{short_id()}", "model": model, "results": results}


def anthropic_message(
    model: str,
    content: list[dict[str, Any]],
    *,
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """An Anthropic Messages API `message` object."""
    return {
        "id": f"msg_{short_id()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            # Anthropic's input_tokens excludes the tokens read from the cache.
            "input_tokens": max(0, input_tokens - cached_tokens),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached_tokens,
            "output_tokens": output_tokens,
        },
    }


def forced_tool_use(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tool_use blocks a fake Claude answers when a Messages body forces a tool
    (`tool_choice` any or tool)."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and "name" in t]
    choice = body.get("tool_choice")
    if not tools or not isinstance(choice, dict) or choice.get("type") not in ("any", "tool"):
        return None
    tool = next((t for t in tools if t["name"] == choice.get("name")), tools[0])
    return [
        {
            "type": "tool_use",
            "id": "toolu_" + short_id(),
            "name": tool["name"],
            "input": example_arguments(tool.get("input_schema")),
        }
    ]
