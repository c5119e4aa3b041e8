"""Decoding (SPEC §3 phase A) and extraction of a GMN document from an LLM reply (SPEC §7)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ._common import MAX_DEPTH, err, kind
from .jsonstrict import StrictJSONError, loads_strict, too_deep
from .model import GMNDocument, GMNError
from .textform import TextFormError, parse_property_block, parse_text_form

__all__ = [
    "Decoded",
    "Extraction",
    "StrictJSONError",
    "TextFormError",
    "decode_gmn",
    "extract_document",
    "loads_strict",
    "parse_property_block",
    "parse_text_form",
]

_JSON_WS: Final = " \t\n\r"
Form = Literal["json", "text", "python"]


@dataclass(frozen=True)
class Decoded:
    """Phase A result: the top-level object, or the GMN001/002/003 errors that stop validation."""

    document: dict[str, Any] | None
    errors: list[GMNError] = field(default_factory=list)
    form: Form | None = None


def _fail(code: str, message: str, path: str = "$", form: Form | None = None) -> Decoded:
    return Decoded(None, [err(code, path, message)], form)


def _finish(value: Any, form: Form) -> Decoded:
    if too_deep(value):
        return _fail(
            "GMN001", f"document nests arrays/objects deeper than {MAX_DEPTH} levels", form=form
        )
    if not isinstance(value, dict):
        return _fail(
            "GMN003", f"top-level value is {kind(value)}; expected a JSON object", form=form
        )
    return Decoded(value, [], form)


def _decode_text(text: str) -> Decoded:
    stripped = text.lstrip(_JSON_WS)
    if not stripped:
        return _fail("GMN001", "input is empty or only whitespace; expected a JSON object")
    if stripped[0] == "{":
        try:
            return _finish(loads_strict(text), "json")
        except StrictJSONError as exc:
            return _fail(
                "GMN001",
                f"input starts with '{{' but is not strict JSON: {exc.message}",
                form="json",
            )
    try:
        return _finish(loads_strict(text), "json")
    except StrictJSONError as exc:
        if exc.too_deep:  # recursion limit hit: deeper than 64 whether or not it is valid JSON
            return _fail("GMN001", f"input nests deeper than {MAX_DEPTH} levels", form="json")
    try:
        return _finish(parse_text_form(text), "text")
    except TextFormError as exc:
        return Decoded(None, exc.errors, "text")


def _decode_python(value: Any) -> Decoded:
    if isinstance(value, GMNDocument):
        value = value.to_json_dict()
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as exc:
        return _fail("GMN001", f"value is not representable as JSON: {exc}")
    try:
        return _finish(loads_strict(text), "python")
    except StrictJSONError as exc:
        return _fail("GMN001", f"value is not strict JSON: {exc.message}")


def decode_gmn(data: Any) -> Decoded:
    """Run SPEC phase A on bytes, text, a dict or a GMNDocument, so every input meets one gate."""
    try:
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                return _fail("GMN001", f"input is not UTF-8 (invalid byte at offset {exc.start})")
            return _decode_text(text)
        if isinstance(data, str):
            try:
                data.encode("utf-8")
            except UnicodeEncodeError as exc:
                return _fail("GMN001", f"text is not valid Unicode (lone surrogate at {exc.start})")
            return _decode_text(data)
        return _decode_python(data)
    except RecursionError:
        return _fail("GMN001", f"document nests deeper than {MAX_DEPTH} levels")


# --- extraction from LLM replies (SPEC §7) --------------------------------------------------

Method = Literal["whole", "fenced", "text", "scan", "fallback"]
_FENCE: Final = re.compile(
    r"```[ \t]*(?P<lang>[A-Za-z0-9_+.-]*)[^\S\n]*\n?(?P<body>.*?)(?:```|\Z)", re.S
)
_BRACES: Final = re.compile(r'[{}"\\]')
_MAX_SCAN_STARTS: Final = 1000


@dataclass(frozen=True)
class Extraction:
    """What to hand the validator (`text`) and the decoded object when a candidate parsed."""

    text: str
    document: dict[str, Any] | None
    method: Method
    problems: list[str] = field(default_factory=list)


def matching_brace(text: str, start: int) -> int | None:
    """Index of the `}` closing the `{` at `start`, tracking string literals and escapes."""
    depth = 0
    in_string = False
    skip = -1
    for match in _BRACES.finditer(text, start):
        pos = match.start()
        if pos == skip:
            continue
        char = match.group()
        if in_string:
            if char == "\\":
                skip = pos + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return pos
    return None


def _try_object(text: str, label: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        value = loads_strict(text)
    except StrictJSONError as exc:
        if text.lstrip(_JSON_WS).startswith("{"):
            problems.append(f"{label} is not strict JSON: {exc.message}")
        return None
    if isinstance(value, dict):
        return value
    problems.append(f"{label} is {kind(value)}, not a JSON object")
    return None


def _clean_text_form(text: str) -> dict[str, Any] | None:
    """The converted document when `text` is entirely a text-form document with nodes."""
    if "[nodes]" not in text:
        return None
    try:
        converted = parse_text_form(text)
    except TextFormError:
        return None
    return converted if converted["nodes"] else None


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def extract_document(reply_text: str) -> Extraction:
    """Pull one GMN JSON object out of an LLM reply without repairing it (SPEC §7 extraction)."""
    problems: list[str] = []
    trimmed = reply_text.strip()
    document = _try_object(trimmed, "the whole reply", problems)
    if document is not None:
        return Extraction(trimmed, document, "whole", problems)

    fences = [(m["lang"].lower(), m["body"], m.start()) for m in _FENCE.finditer(reply_text)]
    ordered = [f for f in fences if f[0] == "json"] + [f for f in fences if f[0] != "json"]
    for lang, body, pos in ordered:
        label = f"the ```{lang} block at line {_line_of(reply_text, pos)}"
        document = _try_object(body.strip(), label, problems)
        if document is not None:
            return Extraction(body.strip(), document, "fenced", problems)

    # A clean text-form answer would otherwise lose to the scan below, which would pick one of
    # its JSON property blocks (e.g. `{"num_states": 4}`) as "the" object; step 4 exists so that
    # text-form answers validate, so hand them over unchanged before scanning.
    fallback = fences[0][1] if fences else reply_text
    text_form = _clean_text_form(fallback)
    if text_form is not None:
        return Extraction(fallback, text_form, "text", problems)

    pos = 0
    for _ in range(_MAX_SCAN_STARTS):
        start = reply_text.find("{", pos)
        if start < 0:
            break
        end = matching_brace(reply_text, start)
        if end is None:
            pos = start + 1
            continue
        span = reply_text[start : end + 1]
        label = f"the {{...}} span at line {_line_of(reply_text, start)}"
        document = _try_object(span, label, problems)
        if document is not None:
            return Extraction(span, document, "scan", problems)
        pos = end + 1

    return Extraction(fallback, None, "fallback", problems)
