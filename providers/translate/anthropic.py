"""OpenAI Chat Completions <-> Anthropic Messages, both ways, requests and answers.

Read from the vendors' type definitions: openai-python `types/chat/*` and anthropic-sdk-python
`types/message_create_params`, `content_block_param`, `tool_param`, `tool_choice_param`,
`message`, `usage`. What one side cannot express (several choices, logprobs, audio, JSON
output modes Anthropic lacks, custom tools) raises `Unsupported`; OpenAI-only hints with no
effect on the answer's shape (seed, store, service_tier, penalties...) are left out.
"""

from __future__ import annotations

import time
from typing import Any

from providers.errors import Unsupported
from providers.translate.common import (
    arguments_object,
    arguments_string,
    carry,
    data_url,
    first_choice,
    parse_data_url,
    part_texts,
)

#: Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
#: OpenAI reasoning_effort -> Anthropic extended-thinking budget (None: no thinking).
THINKING_BUDGETS: dict[str, int | None] = {
    "none": None,
    "minimal": None,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
}
#: Anthropic Messages fields carried as written when a chat body holds them.
_ANTHROPIC_ONLY = ("top_k", "thinking")


# --- OpenAI chat request -> Anthropic Messages request ------------------------------------


def to_messages(chat: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Messages body for a chat body: system turns joined into `system`, parts to blocks,
    tool calls to tool_use, tool messages to tool_result blocks."""
    _refuse_shape(chat)
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(chat.get("messages") or ()):
        where = f"messages.{i}"
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(part_texts(msg.get("content"), where))
        elif role == "user":
            _add(turns, "user", _user_blocks(msg.get("content"), where))
        elif role == "assistant":
            blocks = _assistant_blocks(msg, where)
            if blocks:
                _add(turns, "assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id"),
                "content": part_texts(msg.get("content"), where),
            }
            _add(turns, "user", [result])
        else:
            raise Unsupported(f"{where}: {role!r} messages")
    if not turns:
        raise Unsupported("a conversation with only system messages")
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": chat.get("max_completion_tokens")
        or chat.get("max_tokens")
        or default_max_tokens,
    }
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = turns
    _sampling(chat, out)
    _tools(chat, out)
    user = chat.get("user") or chat.get("safety_identifier")
    if isinstance(user, str):
        out["metadata"] = {"user_id": user}
    carry(chat, out, _ANTHROPIC_ONLY)
    effort = chat.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is not None and "thinking" not in out and _can_think(out, budget):
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    return out


def _can_think(out: dict[str, Any], budget: int) -> bool:
    """Whether a Messages body takes extended thinking as it is. `reasoning_effort` is a
    hint; what the user wrote explicitly wins. Anthropic rejects thinking with a budget not
    below max_tokens, a temperature other than 1, top_k, top_p under 0.95, a forced tool
    (tool_choice any/tool), and a final assistant turn with tool_use blocks but no thinking
    block first — which a chat conversation, having no thinking blocks, can never give."""
    if budget >= out["max_tokens"] or out.get("temperature", 1) != 1 or "top_k" in out:
        return False
    if out.get("top_p", 1) < 0.95:
        return False
    if (out.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return False
    assistant = [t for t in out["messages"] if t["role"] == "assistant"]
    content = assistant[-1]["content"] if assistant else None
    return not (isinstance(content, list) and any(b["type"] == "tool_use" for b in content))


def _refuse_shape(chat: dict[str, Any]) -> None:
    """Options whose answer Anthropic cannot give in the shape the user asked for."""
    if (chat.get("n") or 1) > 1:
        raise Unsupported("n > 1 (several choices)")
    if chat.get("logprobs") or chat.get("top_logprobs"):
        raise Unsupported("logprobs")
    if chat.get("audio") or "audio" in (chat.get("modalities") or ()):
        raise Unsupported("audio output")
    fmt = chat.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
        raise Unsupported(f"response_format {fmt.get('type')}")


def _add(turns: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Append a turn, merging it into the previous one of the same role (tool results and the
    user's next words share one user turn, as Anthropic expects)."""
    if turns and turns[-1]["role"] == role:
        last = turns[-1]
        if isinstance(last["content"], str):
            last["content"] = [{"type": "text", "text": last["content"]}]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        last["content"] = [*last["content"], *content]
        return
    turns.append({"role": role, "content": content})


def _user_blocks(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(part["image_url"].get("url", ""), f"{where}.content.{j}"))
        elif kind == "input_audio":
            raise Unsupported(f"{where}.content.{j}: audio inputs")
        else:
            raise Unsupported(f"{where}.content.{j}: {kind!r} content parts")
    return blocks


def _image_block(url: str, where: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is not None:
        media_type, data = parsed
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise Unsupported(f"{where}: an image that is neither a data URL nor an http(s) URL")
    return {"type": "image", "source": source}


def _assistant_blocks(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = part_texts(msg.get("content"), where)
    if text:
        blocks.append({"type": "text", "text": text})
    for k, call in enumerate(msg.get("tool_calls") or ()):
        if call.get("type", "function") != "function":
            raise Unsupported(f"{where}.tool_calls.{k}: {call.get('type')!r} tool calls")
        fn = call["function"]
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": fn["name"],
                "input": arguments_object(fn.get("arguments"), f"{where}.tool_calls.{k}"),
            }
        )
    return blocks


def _sampling(chat: dict[str, Any], out: dict[str, Any]) -> None:
    # Anthropic's temperature and top_p range over [0, 1]; OpenAI's temperature up to 2.
    for key in ("temperature", "top_p"):
        value = chat.get(key)
        if isinstance(value, int | float):
            out[key] = min(float(value), 1.0) if key == "temperature" else value
    stop = chat.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop


def _tools(chat: dict[str, Any], out: dict[str, Any]) -> None:
    tools = chat.get("tools")
    if not tools:
        return
    converted = []
    for i, tool in enumerate(tools):
        if tool.get("type", "function") != "function":
            raise Unsupported(f"tools.{i}: {tool.get('type')!r} tools")
        fn = tool["function"]
        item: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            item["description"] = fn["description"]
        item["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        converted.append(item)
    out["tools"] = converted
    choice = chat.get("tool_choice")
    mapped: dict[str, Any] | None
    if choice is None:
        mapped = None
    elif choice in ("auto", "none"):
        mapped = {"type": choice}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        mapped = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise Unsupported(f"tool_choice {choice!r}")
    if chat.get("parallel_tool_calls") is False and (mapped or {}).get("type") != "none":
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    if mapped is not None:
        out["tool_choice"] = mapped


# --- Anthropic answer -> OpenAI chat.completion ---------------------------------------------


def to_chat_answer(message: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion an Anthropic message stands for: text, tool calls, usage."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            fn = {"name": block.get("name"), "arguments": arguments_string(block.get("input"))}
            calls.append({"id": block.get("id"), "type": "function", "function": fn})
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    stop = message.get("stop_reason") or "end_turn"
    usage = message.get("usage") or {}
    cached = usage.get("cache_read_input_tokens") or 0
    # Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens counts
    # every input token, the cached ones within.
    prompt = (
        (usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    )
    completion = usage.get("output_tokens") or 0
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(stop, stop),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


# --- Anthropic Messages request -> OpenAI chat request --------------------------------------


def to_chat(params: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat body for a Messages body (an Anthropic batch line sent to an OpenAI-compatible
    endpoint): `system` first, blocks to parts, tool_use / tool_result to tool calls and tool
    messages; thinking and cache_control have no OpenAI equivalent and are left out."""
    messages: list[dict[str, Any]] = []
    system = params.get("system")
    if system:
        messages.append({"role": "system", "content": _block_texts(system, "system")})
    for i, msg in enumerate(params.get("messages") or ()):
        where = f"messages.{i}"
        role, content = msg.get("role"), msg.get("content")
        if role == "assistant":
            messages.append(_assistant_message(content, where))
        elif role == "system":
            messages.append({"role": "system", "content": _block_texts(content, where)})
        elif isinstance(content, str):
            messages.append({"role": "user", "content": content})
        else:
            messages.extend(_user_messages(content, where))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if params.get("max_tokens"):
        out["max_tokens"] = params["max_tokens"]
    carry(params, out, ("temperature", "top_p"))
    if params.get("stop_sequences"):
        out["stop"] = params["stop_sequences"]
    _chat_tools(params, out)
    metadata = params.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def _block_texts(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(content or ()):
        if block.get("type") != "text":
            raise Unsupported(f"{where}.{j}: {block.get('type')!r} blocks in system text")
        texts.append(block.get("text") or "")
    return "\n\n".join(texts)


def _user_messages(content: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Tool results become tool messages (first, as OpenAI wants them right after the call);
    the rest stays one user message."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        at = f"{where}.content.{j}"
        if kind == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else _block_texts(inner, at)
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        else:
            raise Unsupported(f"{at}: {kind!r} blocks")
    if parts:
        texts_only = all(p["type"] == "text" for p in parts)
        content_out: Any = "".join(p["text"] for p in parts) if texts_only else parts
        out.append({"role": "user", "content": content_out})
    return out


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return data_url(source.get("media_type", ""), source.get("data", ""))
    if source.get("type") == "url":
        return str(source.get("url", ""))
    raise Unsupported(f"{where}: images from a {source.get('type')!r} source")


def _assistant_message(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content or ()):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            fn = {"name": block.get("name"), "arguments": arguments_string(block.get("input"))}
            calls.append({"id": block.get("id"), "type": "function", "function": fn})
        elif kind not in ("thinking", "redacted_thinking"):
            raise Unsupported(f"{where}.content.{j}: {kind!r} blocks")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _chat_tools(params: dict[str, Any], out: dict[str, Any]) -> None:
    tools = params.get("tools")
    if not tools:
        return
    converted = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            raise Unsupported(f"tools.{i}: Anthropic server tool {tool.get('type')!r}")
        fn: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            fn["description"] = tool["description"]
        fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        converted.append({"type": "function", "function": fn})
    out["tools"] = converted
    choice = params.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("auto", "none"):
            out["tool_choice"] = kind
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False


# --- OpenAI chat.completion -> Anthropic message --------------------------------------------


def to_message_answer(completion: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic message a chat.completion stands for (first choice)."""
    choice = first_choice(completion)
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            args = arguments_object(fn.get("arguments"), "answer")
        except Unsupported:
            args = {"arguments": fn.get("arguments")}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}
        )
    usage = completion.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    finish = choice.get("finish_reason") or "stop"
    return {
        "id": completion.get("id"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": STOP_REASONS.get(finish, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(0, (usage.get("prompt_tokens") or 0) - cached),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "output_tokens": usage.get("completion_tokens") or 0,
        },
    }
