"""Input lines as users already have them (OpenAI / Anthropic batch files, or native requests)
turned into `LLMRequest`s with their bodies as written."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.bodies import BodyError, check_body
from schemas.request import (
    CUSTOM_ID_MAX,
    EXTENSIONS,
    KIND_URLS,
    URL_KINDS,
    EndpointKind,
    LLMRequest,
)

CHAT_URL = KIND_URLS["chat"]
_LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})
_ANTHROPIC_KEYS = frozenset({"custom_id", "params"})
#: Top-level keys of a native line that are not body fields.
_NATIVE_KEYS = frozenset({"custom_id", "kind", "body", *EXTENSIONS})

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


def parse_line(
    raw: bytes | str, line: int, kinds: Collection[EndpointKind] | None = None
) -> LLMRequest:
    """Turn one JSONL line into a request, or raise `LineError` saying exactly what is wrong.

    `kinds` limits the endpoints a line may address (an OpenAI batch runs one `endpoint`).
    """
    return parse_object(json_object(raw, line), line, kinds)


def plain_line(
    raw: bytes, kinds: Collection[EndpointKind] | None = None
) -> tuple[str, EndpointKind, dict[str, Any]] | None:
    """The line in its most common form, an OpenAI batch line (custom_id, method POST, url,
    body) with none of batchyard's extensions, decoded and checked: (custom_id, kind, body),
    as `parse_line` would make its request. None for any other line, good or bad:
    `parse_line` reads it then, and names what is wrong. Skips the request model and the
    layers `parse_line` goes through, most of a submitted line's CPU (#22)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or len(obj) != 4 or obj.get("method") != "POST":
        return None
    custom_id, url, body = obj.get("custom_id"), obj.get("url"), obj.get("body")
    kind = URL_KINDS.get(url) if type(url) is str else None
    if (
        kind is None
        or (kinds is not None and kind not in kinds)
        or type(custom_id) is not str
        or not 0 < len(custom_id) <= CUSTOM_ID_MAX
        or not custom_id.isprintable()
        or type(body) is not dict
        or not EXTENSIONS.isdisjoint(body)
    ):
        return None
    try:
        check_body(kind, body)
    except BodyError:
        return None
    return custom_id, kind, body


def json_object(item: Any, line: int) -> dict[str, Any]:
    """A line decoded (bytes or text; anything else is taken as decoded), or `LineError`
    unless it is a JSON object."""
    obj = item
    if isinstance(item, bytes | bytearray | str):
        try:
            obj = orjson.loads(item)
        except orjson.JSONDecodeError as exc:
            raise LineError(line, None, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LineError(line, None, f"must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_object(
    obj: dict[str, Any], line: int, kinds: Collection[EndpointKind] | None = None
) -> LLMRequest:
    """`parse_line` for a line already decoded."""
    custom_id = obj.get("custom_id")
    cid = custom_id if isinstance(custom_id, str) else None
    if "custom_id" not in obj:
        raise LineError(line, "custom_id", "field required")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(line, "custom_id", "must be a non-empty string")
    if "url" in obj or "method" in obj:
        return _from_openai(obj, line, cid, kinds)
    if "params" in obj:
        extra = obj.keys() - _ANTHROPIC_KEYS
        if extra:
            field = sorted(extra)[0]
            raise LineError(line, field, "unknown field in an Anthropic batch line", cid)
        body = obj["params"]
        if not isinstance(body, dict):
            raise LineError(line, "params", "must be a JSON object", cid)
        _allowed("messages", kinds, line, cid)
        return _request(custom_id, "messages", body, line, "params.", cid)
    if "body" in obj or "kind" in obj:
        kind = obj.get("kind", "chat")
        if kind not in _CHECKED:
            known = ", ".join(_CHECKED)
            raise LineError(line, "kind", f"unknown kind {kind!r} (known: {known})", cid)
        body = _body_of(obj, kind, kinds, line, cid)
        extra = obj.keys() - _NATIVE_KEYS
        if extra:
            raise LineError(line, sorted(extra)[0], "unknown field in a native line", cid)
        ext = {k: obj[k] for k in EXTENSIONS if k in obj}
        return _request(custom_id, kind, body, line, "body.", cid, ext)
    # The flat native form of earlier versions: body fields next to custom_id.
    _allowed("chat", kinds, line, cid)
    body = {k: v for k, v in obj.items() if k not in _NATIVE_KEYS}
    ext = {k: obj[k] for k in EXTENSIONS if k in obj}
    return _request(custom_id, "chat", body, line, "", cid, ext)


_CHECKED: tuple[EndpointKind, ...] = (
    "chat",
    "embeddings",
    "responses",
    "completions",
    "moderations",
    "messages",
)


def _body_of(
    obj: dict[str, Any],
    kind: EndpointKind,
    kinds: Collection[EndpointKind] | None,
    line: int,
    cid: str | None,
) -> dict[str, Any]:
    """The line's body, once its kind is one the batch takes."""
    _allowed(kind, kinds, line, cid)
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError(line, "body", "must be a JSON object", cid)
    return body


def _allowed(
    kind: EndpointKind, kinds: Collection[EndpointKind] | None, line: int, cid: str | None
) -> None:
    if kinds is not None and kind not in kinds:
        # A chat batch also takes Anthropic lines; its endpoint is what names it.
        wanted = ", ".join(sorted(KIND_URLS[k] for k in kinds if k in KIND_URLS)) or "Anthropic"
        found = KIND_URLS.get(kind, "/v1/messages (an Anthropic Message Batches line)")
        raise LineError(line, "url", f"this batch takes {wanted} requests, not {found}", cid)


def _from_openai(
    obj: dict[str, Any], line: int, cid: str | None, kinds: Collection[EndpointKind] | None
) -> LLMRequest:
    extra = obj.keys() - _LINE_KEYS
    if extra:
        raise LineError(line, sorted(extra)[0], "unknown field in an OpenAI batch line", cid)
    if obj.get("method", "POST") != "POST":
        raise LineError(line, "method", f"must be POST, got {obj.get('method')!r}", cid)
    url = obj.get("url")
    kind = URL_KINDS.get(url) if isinstance(url, str) else None
    if kind is None:
        known = ", ".join(URL_KINDS)
        raise LineError(line, "url", f"must be one of {known}, got {url!r}", cid)
    body = _body_of(obj, kind, kinds, line, cid)
    return _request(obj["custom_id"], kind, body, line, "body.", cid)


def _request(
    custom_id: str,
    kind: EndpointKind,
    body: dict[str, Any],
    line: int,
    prefix: str,
    cid: str | None,
    ext: dict[str, Any] | None = None,
) -> LLMRequest:
    """Validate once; the body stays the object the line holds, less batchyard's extensions."""
    fields: dict[str, Any] = dict(ext) if ext else {}
    if not EXTENSIONS.isdisjoint(body):
        body = dict(body)
        for name in EXTENSIONS:
            if name in body:
                fields[name] = body.pop(name)
        ext_prefix = prefix
    else:
        ext_prefix = ""
    fields["custom_id"] = custom_id
    fields["kind"] = kind
    fields["body"] = body
    try:
        # The validator itself: model_validate's Python wrapper is a tenth of a line's cost.
        request: LLMRequest = _VALIDATE(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = loc if loc == "custom_id" else f"{ext_prefix}{loc}"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise LineError(line, field, f"{err['msg']}{more}", cid) from None
    try:
        check_body(kind, body)
    except BodyError as bad:
        raise LineError(line, f"{prefix}{bad.field}", bad.reason, cid) from None
    return request
