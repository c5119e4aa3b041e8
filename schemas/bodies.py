"""Checks a request body once, at submit: strict where a mistake would cost the user a failed
call (roles, content part types, tool call ids, required inputs), silent about vendor keys.

Bodies stay dicts as written; nothing here copies or rewrites them. The rules follow the
vendors' own type definitions (openai-python `types/chat`, `embedding_create_params`,
`completion_create_params`, `moderation_create_params`, `responses/response_create_params`;
anthropic-sdk-python `message_param`, `content_block_param`, `tool_choice_param`).
"""

from __future__ import annotations

from typing import Any

from schemas.request import EndpointKind


class BodyError(ValueError):
    """A body that cannot be sent; `field` is its dotted path inside the body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = message


#: Content part types each chat role may carry (OpenAI ChatCompletion*MessageParam).
CHAT_PARTS: dict[str, frozenset[str]] = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
}
CHAT_ROLES = (*CHAT_PARTS, "function")
#: What each part type must hold: (key, type of its value).
_PART_FIELDS: dict[str, tuple[str, type]] = {
    "text": ("text", str),
    "image_url": ("image_url", dict),
    "input_audio": ("input_audio", dict),
    "file": ("file", dict),
    "refusal": ("refusal", str),
}
#: Anthropic MessageParam roles and content block types (anthropic-sdk-python).
MESSAGES_ROLES = ("user", "assistant", "system")
MESSAGES_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "tool_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "mid_conv_system",
    }
)
RESPONSES_ROLES = ("user", "assistant", "system", "developer")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def check_body(kind: EndpointKind, body: dict[str, Any]) -> None:
    """Raise `BodyError` naming the first field that would make the call fail."""
    _CHECKS[kind](body)
    if body.get("stream"):
        raise BodyError("stream", "must be false or absent: batch answers are collected whole")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BodyError("model", "must be a string")


def _positive_int(body: dict[str, Any], *names: str) -> None:
    for name in names:
        value = body.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise BodyError(name, "must be an integer >= 1")


def _messages(body: dict[str, Any]) -> list[Any]:
    """The non-empty `messages` list of a chat or messages body."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BodyError("messages", "field required: a list of messages")
    if not messages:
        raise BodyError("messages", "must hold at least 1 message")
    return messages


def _check_chat(body: dict[str, Any]) -> None:
    messages = _messages(body)
    for i, msg in enumerate(messages):
        _chat_message(msg, f"messages.{i}")
    _positive_int(body, "max_tokens", "max_completion_tokens", "n")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in RESPONSE_FORMATS:
            raise BodyError("response_format.type", f"must be one of {', '.join(RESPONSE_FORMATS)}")
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            raise BodyError("response_format.json_schema", "field required: an object")
    _tools(body.get("tools"))


def _chat_message(msg: Any, where: str) -> None:
    if not isinstance(msg, dict):
        raise BodyError(where, "must be an object with a role")
    role = msg.get("role")
    content = msg.get("content")
    if role not in CHAT_PARTS:
        if role == "function":
            if not isinstance(msg.get("name"), str):
                raise BodyError(f"{where}.name", "field required for a function message")
            if content is not None and not isinstance(content, str):
                raise BodyError(f"{where}.content", "must be a string")
            return
        known = ", ".join(repr(r) for r in CHAT_ROLES)
        raise BodyError(f"{where}.role", f"unknown role {role!r} (known: {known})")
    if type(content) is str:  # the common case, checked first
        pass
    elif isinstance(content, list):
        allowed = CHAT_PARTS[role]
        for j, part in enumerate(content):
            _chat_part(part, role, allowed, f"{where}.content.{j}")
    elif content is None and role == "assistant":
        if not msg.get("tool_calls") and not msg.get("function_call") and not msg.get("audio"):
            raise BodyError(f"{where}.content", "required unless the message has tool_calls")
    else:
        raise BodyError(f"{where}.content", "must be a string or a list of content parts")
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise BodyError(f"{where}.tool_call_id", "field required for a tool message")
    elif role == "assistant" and "tool_calls" in msg:
        _tool_calls(msg["tool_calls"], f"{where}.tool_calls")
    name = msg.get("name")
    if name is not None and not isinstance(name, str):
        raise BodyError(f"{where}.name", "must be a string")


def _chat_part(part: Any, role: str, allowed: frozenset[str], where: str) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in allowed:
        if kind in _PART_FIELDS:
            why = f"a {role} message cannot carry {kind!r} parts"
        else:
            why = f"unknown content part type {kind!r}"
        raise BodyError(f"{where}.type", f"{why} (allowed: {', '.join(sorted(allowed))})")
    key, expected = _PART_FIELDS[kind]
    if not isinstance(part.get(key), expected):
        raise BodyError(f"{where}.{key}", f"field required: a {expected.__name__}")
    value: Any = part[key]
    if kind == "image_url" and not (isinstance(value.get("url"), str) and value["url"]):
        raise BodyError(f"{where}.image_url.url", "field required: the image's URL or data URL")
    if kind == "input_audio" and not isinstance(value.get("data"), str):
        raise BodyError(f"{where}.input_audio.data", "field required: base64 audio")
    if kind == "file" and not (value.get("file_data") or value.get("file_id")):
        raise BodyError(f"{where}.file", "needs file_data or file_id")


def _tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise BodyError(where, "must be a list")
    for k, call in enumerate(calls):
        at = f"{where}.{k}"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str):
            raise BodyError(f"{at}.id", "field required: the tool call's id")
        kind = call.get("type", "function")
        if kind == "function":
            fn = call.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BodyError(f"{at}.function.name", "field required")
            if not isinstance(fn.get("arguments"), str):
                raise BodyError(f"{at}.function.arguments", "must be a JSON string")
        elif kind != "custom":
            raise BodyError(f"{at}.type", f"unknown tool call type {kind!r}")


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BodyError("tools", "must be a list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BodyError(f"tools.{i}", "must be an object")
        fn = tool.get("function")
        if tool.get("type", "function") == "function" and not (
            isinstance(fn, dict) and isinstance(fn.get("name"), str)
        ):
            raise BodyError(f"tools.{i}.function.name", "field required")


def _is_tokens(value: list[Any]) -> bool:
    return all(type(t) is int for t in value)


def _text_or_tokens(body: dict[str, Any], name: str) -> None:
    """`input`/`prompt` as OpenAI types them: a string, strings, tokens, or lists of tokens."""
    value = body.get(name)
    if isinstance(value, str):
        if not value:
            raise BodyError(name, "must not be empty")
        return
    if not isinstance(value, list):
        raise BodyError(name, "field required: a string, a list of strings, or token arrays")
    if not value:
        raise BodyError(name, "must not be an empty list")
    if all(isinstance(v, str) for v in value) or _is_tokens(value):
        return
    if all(isinstance(v, list) and v and _is_tokens(v) for v in value):
        return
    raise BodyError(name, "must be a string, a list of strings, or token arrays")


def _check_embeddings(body: dict[str, Any]) -> None:
    _text_or_tokens(body, "input")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise BodyError("encoding_format", "must be 'float' or 'base64'")
    _positive_int(body, "dimensions")


def _check_completions(body: dict[str, Any]) -> None:
    _text_or_tokens(body, "prompt")
    _positive_int(body, "max_tokens", "n")


def _check_moderations(body: dict[str, Any]) -> None:
    value = body.get("input")
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise BodyError("input", "field required: a string or a non-empty list")
    for i, item in enumerate(value):
        if not isinstance(item, str) and not (isinstance(item, dict) and "type" in item):
            raise BodyError(f"input.{i}", "must be a string or an input object with a type")


def _check_responses(body: dict[str, Any]) -> None:
    value = body.get("input")
    if value is None:
        if body.get("prompt") is None and body.get("previous_response_id") is None:
            raise BodyError("input", "field required (or prompt / previous_response_id)")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise BodyError(f"input.{i}", "must be an input item object")
            role = item.get("role")
            if role is not None and role not in RESPONSES_ROLES:
                known = ", ".join(repr(r) for r in RESPONSES_ROLES)
                raise BodyError(f"input.{i}.role", f"unknown role {role!r} (known: {known})")
    elif not isinstance(value, str):
        raise BodyError("input", "must be a string or a list of input items")
    _positive_int(body, "max_output_tokens")


def _check_messages(body: dict[str, Any]) -> None:
    messages = _messages(body)
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise BodyError(where, "must be an object with a role")
        if msg.get("role") not in MESSAGES_ROLES:
            known = ", ".join(repr(r) for r in MESSAGES_ROLES)
            raise BodyError(f"{where}.role", f"unknown role {msg.get('role')!r} (known: {known})")
        content = msg.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BodyError(f"{where}.content", "must be a string or a list of content blocks")
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in MESSAGES_BLOCKS:
                raise BodyError(f"{where}.content.{j}.type", f"unknown content block {kind!r}")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise BodyError("system", "must be a string or a list of text blocks")
    _positive_int(body, "max_tokens")
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")
    ):
        raise BodyError("tool_choice.type", "must be one of auto, any, tool, none")


_CHECKS = {
    "chat": _check_chat,
    "embeddings": _check_embeddings,
    "completions": _check_completions,
    "moderations": _check_moderations,
    "responses": _check_responses,
    "messages": _check_messages,
}
