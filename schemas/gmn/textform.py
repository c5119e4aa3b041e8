"""The INI-like GMN text form (SPEC §2), converted to the JSON document model."""

from __future__ import annotations

import re
from typing import Any, Final

from ._common import err, parse_int_token, show
from .jsonstrict import StrictJSONError, loads_strict
from .model import GMNError

_STRIP: Final = " \t\r"
_NODE_LINE: Final = re.compile(
    r"(?P<id>[A-Za-z0-9_]+)[ \t]*:[ \t]*(?P<type>[A-Za-z0-9_]+)(?:[ \t]*(?P<block>\{.*\}))?"
)
_EDGE_LINE: Final = re.compile(
    r"(?P<source>[A-Za-z0-9_]+)[ \t]*->[ \t]*(?P<target>[A-Za-z0-9_]+)[ \t]*:[ \t]*"
    r"(?P<type>[A-Za-z0-9_]+)"
)
_PAIR: Final = re.compile(r"[ \t]*(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*:[ \t]*(?P<value>.*?)[ \t]*")
_INT: Final = re.compile(r"-?[0-9]+")
_DECIMAL: Final = re.compile(r"-?[0-9]+\.[0-9]+")
_STRING: Final = re.compile(r'"[^",]*"')


class TextFormError(ValueError):
    """Raised with every GMN002 syntax error of a text-form document (one per bad line)."""

    def __init__(self, errors: list[GMNError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def _simple_value(text: str) -> Any:
    if _INT.fullmatch(text):
        return parse_int_token(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    if _STRING.fullmatch(text):
        return text[1:-1]
    raise ValueError(f"value {show(text)} is not an integer, a decimal or a double-quoted string")


def _simple_pairs(block: str) -> dict[str, Any]:
    inner = block[1:-1]
    if not inner.strip(" \t"):
        return {}
    result: dict[str, Any] = {}
    for piece in inner.split(","):
        match = _PAIR.fullmatch(piece)
        if match is None:
            shown = show(piece.strip(" \t"))
            raise ValueError(f"{shown} is not a `key: value` pair")
        key = match["key"]
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = _simple_value(match["value"])
    return result


def parse_property_block(block: str) -> dict[str, Any]:
    """Parse a `{...}` property block: strict JSON object first, else simple `key: value` pairs."""
    try:
        value = loads_strict(block)
    except StrictJSONError as json_exc:
        try:
            return _simple_pairs(block)
        except ValueError as pairs_exc:
            raise ValueError(
                f"property block is neither a strict JSON object ({json_exc.message}) "
                f"nor simple pairs ({pairs_exc})"
            ) from None
    if not isinstance(value, dict):  # pragma: no cover - a {...} span that parses is an object
        raise ValueError("property block is not a JSON object")
    return value


def parse_text_form(text: str) -> dict[str, Any]:
    """Convert the text form to the JSON model so both forms share one validator (SPEC §2)."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    errors: list[GMNError] = []
    section: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(_STRIP)
        where = f"line {number}"
        if not line or line.startswith("#"):
            continue
        if line in ("[nodes]", "[edges]"):
            section = line[1:-1]
            continue
        if line.startswith("["):
            errors.append(
                err(
                    "GMN002",
                    where,
                    f"unknown section header {show(line)}; expected [nodes] or [edges]",
                )
            )
            continue
        if section is None:
            errors.append(
                err("GMN002", where, "content before the first [nodes] or [edges] header")
            )
            continue
        if section == "nodes":
            node_match = _NODE_LINE.fullmatch(line)
            if node_match is None:
                errors.append(
                    err(
                        "GMN002",
                        where,
                        "bad node line; expected `ID: TYPE` "
                        "optionally followed by one {...} property block",
                    )
                )
                continue
            properties: dict[str, Any] = {}
            if node_match["block"] is not None:
                try:
                    properties = parse_property_block(node_match["block"])
                except ValueError as exc:
                    errors.append(err("GMN002", where, f"{exc}"))
                    continue
            nodes.append(
                {"id": node_match["id"], "type": node_match["type"], "properties": properties}
            )
        else:
            edge_match = _EDGE_LINE.fullmatch(line)
            if edge_match is None:
                errors.append(
                    err(
                        "GMN002",
                        where,
                        "bad edge line; expected `ID -> ID: TYPE` with nothing after",
                    )
                )
                continue
            edges.append(
                {
                    "source": edge_match["source"],
                    "target": edge_match["target"],
                    "type": edge_match["type"],
                }
            )
    if errors:
        raise TextFormError(errors)
    return {"nodes": nodes, "edges": edges}
