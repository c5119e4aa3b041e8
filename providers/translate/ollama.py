"""OpenAI chat / embeddings requests -> Ollama's native /api/chat and /api/embed, and their
answers back as OpenAI `chat.completion` / embeddings `list` objects.

Read from Ollama's `api/types.go` (ChatRequest, Message with images / tool_calls /
tool_name / tool_call_id, Tool, EmbedRequest, EmbedResponse) and docs/api.md.
"""

from __future__ import annotations

import time
from typing import Any

from providers.errors import Unsupported
from providers.translate.common import (
    arguments_object,
    arguments_string,
    carry,
    parse_data_url,
    part_texts,
)
from schemas import vectors

#: Chat body keys that belong at the top of an Ollama body, carried as written.
TOP_LEVEL = frozenset({"format", "tools", "think", "keep_alive", "options", "truncate", "shift"})
#: OpenAI sampling keys Ollama reads from `options` under the same name.
SAME_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
#: OpenAI-only keys with no Ollama meaning; left out.
DROPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "response_format",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "store",
        "metadata",
        "service_tier",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prediction",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "modalities",
        "verbosity",
    }
)


def to_chat(chat: dict[str, Any], model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The /api/chat body for a chat body; `options` holds the endpoint's own model options."""
    if (chat.get("n") or 1) > 1:
        raise Unsupported("n > 1 (several choices)")
    names: dict[str, str] = {}
    messages = [_message(msg, f"messages.{i}", names) for i, msg in enumerate(chat["messages"])]
    out: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
    opts = dict(options)
    for key in SAME_OPTIONS:
        if key in chat:
            opts[key] = chat[key]
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit is not None:
        opts["num_predict"] = limit
    stop = chat.get("stop")
    if stop is not None:
        opts["stop"] = [stop] if isinstance(stop, str) else stop
    fmt = chat.get("response_format") or {}
    if fmt.get("type") == "json_object":
        out["format"] = "json"
    elif fmt.get("type") == "json_schema":
        out["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
    effort = chat.get("reasoning_effort")
    if effort in ("low", "medium", "high"):
        out["think"] = effort  # gpt-oss style levels; other thinking models take a bool
    for key, value in chat.items():
        if key == "options" and isinstance(value, dict):
            opts.update(value)
        elif key in TOP_LEVEL:
            out[key] = value
        elif key not in DROPPED and key not in SAME_OPTIONS:
            opts[key] = value  # Ollama model options written at the top (num_ctx, top_k...)
    if opts:
        out["options"] = opts
    return out


def _message(msg: dict[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    role = msg.get("role")
    if role == "developer":
        role = "system"
    if role not in ("system", "user", "assistant", "tool"):
        raise Unsupported(f"{where}: {role!r} messages")
    content = msg.get("content")
    out: dict[str, Any] = {"role": role}
    if isinstance(content, list) and role == "user":
        texts, images = [], []
        for j, part in enumerate(content):
            kind = part.get("type")
            if kind == "text":
                texts.append(part.get("text") or "")
            elif kind == "image_url":
                images.append(_image(part["image_url"].get("url", ""), f"{where}.content.{j}"))
            else:
                raise Unsupported(f"{where}.content.{j}: {kind!r} content parts")
        out["content"] = "".join(texts)
        if images:
            out["images"] = images
    else:
        out["content"] = part_texts(content, where)
    calls = msg.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            _tool_call(c, f"{where}.tool_calls.{k}", names) for k, c in enumerate(calls)
        ]
    if role == "tool":
        call_id = msg.get("tool_call_id")
        out["tool_call_id"] = call_id
        if call_id in names:
            out["tool_name"] = names[call_id]
    return out


def _image(url: str, where: str) -> str:
    parsed = parse_data_url(url)
    if parsed is None:
        raise Unsupported(f"{where}: an image URL (Ollama takes inline base64 images only)")
    return parsed[1]


def _tool_call(call: dict[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    if call.get("type", "function") != "function":
        raise Unsupported(f"{where}: {call.get('type')!r} tool calls")
    fn = call["function"]
    names[call["id"]] = fn["name"]
    return {
        "id": call["id"],
        "function": {"name": fn["name"], "arguments": arguments_object(fn.get("arguments"), where)},
    }


def to_chat_answer(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat.completion an /api/chat answer stands for."""
    message = answer.get("message") or {}
    calls = [
        {
            "id": call.get("id") or f"call_{i}",
            "type": "function",
            "function": {
                "name": (call.get("function") or {}).get("name"),
                "arguments": arguments_string((call.get("function") or {}).get("arguments")),
            },
        }
        for i, call in enumerate(message.get("tool_calls") or ())
    ]
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": message.get("content") or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    done = answer.get("done_reason") or "stop"
    finish = "tool_calls" if calls else ("length" if done == "length" else "stop")
    prompt, completion = answer.get("prompt_eval_count") or 0, answer.get("eval_count") or 0
    return {
        "id": f"chatcmpl-ollama-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model") or model,
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def to_embed(body: dict[str, Any], model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The /api/embed body for an embeddings body (texts only: Ollama takes no token ids)."""
    value = body.get("input")
    if not (isinstance(value, str) or all(isinstance(v, str) for v in value or ())):
        raise Unsupported("token-array embedding inputs")
    out: dict[str, Any] = {"model": model, "input": value}
    if body.get("dimensions"):
        out["dimensions"] = body["dimensions"]
    carry(body, out, ("truncate", "keep_alive"))
    if options:
        out["options"] = options
    return out


def to_embeddings_answer(answer: dict[str, Any], model: str, fmt: str) -> dict[str, Any]:
    """The OpenAI embeddings `list` an /api/embed answer stands for, in the asked encoding."""
    data = []
    for i, vector in enumerate(answer.get("embeddings") or ()):
        value: Any = vectors.encode(vector) if fmt == "base64" else vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = answer.get("prompt_eval_count") or 0
    return {
        "object": "list",
        "data": data,
        "model": answer.get("model") or model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
