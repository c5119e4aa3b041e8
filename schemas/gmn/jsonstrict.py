"""Strict RFC 8259 JSON for GMN: no NaN/Infinity, no duplicate keys, no trailing text (SPEC §1)."""

from __future__ import annotations

import json
from typing import Any

from ._common import MAX_DEPTH, parse_int_token


class StrictJSONError(ValueError):
    """Raised when text is not one strict JSON value; `pos` is a character offset when known."""

    def __init__(self, message: str, pos: int | None = None, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.too_deep = too_deep


def _reject_constant(token: str) -> Any:
    raise StrictJSONError(f"{token} is not a JSON number")


def _pairs_to_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise StrictJSONError(f"duplicate object key {json.dumps(key, ensure_ascii=False)}")
        obj[key] = value
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_to_object,
    parse_constant=_reject_constant,
    parse_int=parse_int_token,
    strict=True,
)
_JSON_WS = " \t\n\r"
_CONTAINERS = (dict, list)


def _location(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {column}"


def _trailing_comma(text: str, pos: int) -> bool:
    """True when the parser stopped at a `]`/`}` that follows a comma (a trailing comma)."""
    if pos >= len(text) or text[pos] not in "]}":
        return False
    before = text[:pos].rstrip(_JSON_WS)
    return before.endswith(",")


def loads_strict(text: str) -> Any:
    """Parse exactly one strict JSON value, so malformed LLM output is reported, never repaired."""
    try:
        value, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip(_JSON_WS)))
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        if _trailing_comma(text, exc.pos):
            message = f"trailing comma before {text[exc.pos]!r} at {_location(text, exc.pos)}"
        else:
            message = f"{exc.msg} at {_location(text, exc.pos)}"
        raise StrictJSONError(message, exc.pos) from None
    except RecursionError:
        raise StrictJSONError(f"nesting deeper than {MAX_DEPTH} levels", too_deep=True) from None
    except (ValueError, OverflowError) as exc:  # pragma: no cover - defensive
        raise StrictJSONError(str(exc)) from None
    rest = len(text) - len(text[end:].lstrip(_JSON_WS))
    if rest < len(text):
        raise StrictJSONError(
            f"unexpected text after the JSON value at {_location(text, rest)}", rest
        )
    return value


def too_deep(value: Any) -> bool:
    """True when arrays/objects nest deeper than 64 levels (the top-level value is level 1)."""
    level: list[Any] = [value] if type(value) in _CONTAINERS else []
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below.extend([c for c in children if type(c) in _CONTAINERS])
        level = below
        depth += 1
    return False
