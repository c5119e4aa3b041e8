"""What a request needs from an endpoint beyond its kind: images, audio, files, tools, JSON
output. Routing compares these with each adapter's declared capabilities and skips an
endpoint that lacks one, without calling it."""

from __future__ import annotations

from typing import Any, Literal

from schemas.request import LLMRequest

Feature = Literal["images", "audio", "files", "tools", "json_object", "json_schema"]

#: Content part / block types and the feature each needs (OpenAI chat and Responses parts,
#: Anthropic blocks).
PART_FEATURES: dict[str, Feature] = {
    "image_url": "images",
    "input_image": "images",
    "image": "images",
    "input_audio": "audio",
    "file": "files",
    "input_file": "files",
    "document": "files",
    "tool_use": "tools",
    "tool_result": "tools",
}
_NONE: frozenset[Feature] = frozenset()


def needs(request: LLMRequest) -> frozenset[Feature]:
    """The features a request uses; empty for plain text (nearly every request)."""
    body = request.body
    found: set[Feature] = set()
    if body.get("tools"):
        found.add("tools")
    kind = request.kind
    if kind in ("chat", "messages"):
        for msg in body.get("messages") or ():
            if not isinstance(msg, dict):
                continue
            content = msg.get("content")
            if type(content) is not str:
                _parts(content, found)
            if msg.get("tool_calls") or msg.get("role") == "tool":
                found.add("tools")
        _parts(body.get("system"), found)
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            found.add(fmt["type"])
        if "audio" in (body.get("modalities") or ()):
            found.add("audio")
    elif kind == "responses":
        _parts(body.get("input"), found)
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            found.add(fmt["type"])
    elif kind == "moderations":
        _parts(body.get("input"), found)
    return frozenset(found) if found else _NONE


def _parts(value: Any, found: set[Feature]) -> None:
    if not isinstance(value, list):
        return
    for part in value:
        if not isinstance(part, dict):
            continue
        feature = PART_FEATURES.get(part.get("type", ""))
        if feature is not None:
            found.add(feature)
        if part.get("type") in ("function_call", "function_call_output"):
            found.add("tools")
        inner = part.get("content")
        if isinstance(inner, list):
            _parts(inner, found)
