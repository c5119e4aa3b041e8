"""Small pieces every translation needs: data URLs, tool arguments, text of content parts."""

from __future__ import annotations

from typing import Any

import orjson

from providers.errors import Unsupported


def carry(source: dict[str, Any], out: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Copy those of `keys` that `source` holds, as they are: fields both formats spell alike."""
    for key in keys:
        if key in source:
            out[key] = source[key]


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL, else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if not sep or encoding != "base64":
        return None
    return media_type, data


def data_url(media_type: str, data: str) -> str:
    """The data URL of base64 data."""
    return f"data:{media_type};base64,{data}"


def arguments_object(arguments: Any, where: str) -> dict[str, Any]:
    """A tool call's JSON-string arguments as the object other vendors carry."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        raise Unsupported(f"{where}: tool call arguments that are not JSON") from None
    if not isinstance(value, dict):
        raise Unsupported(f"{where}: tool call arguments that are not a JSON object")
    return value


def arguments_string(arguments: Any) -> str:
    """Tool call arguments as the JSON string OpenAI's chat format carries."""
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def part_texts(content: Any, where: str) -> str:
    """The text of a string or a list of text parts; anything else cannot be carried."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            kind = part.get("type") if isinstance(part, dict) else None
            raise Unsupported(f"{where}: {kind!r} content parts")
        texts.append(part.get("text") or part.get("refusal") or "")
    return "".join(texts)


def first_choice(completion: dict[str, Any]) -> dict[str, Any]:
    """The first choice of a chat.completion (bodies were checked by the adapter)."""
    choices = completion.get("choices") or [{}]
    choice: dict[str, Any] = choices[0]
    return choice
