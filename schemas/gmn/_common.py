"""Shared constants and helpers for the GMN parser and validator (SPEC §1, §5)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from .model import GMNError

ID_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ID_LEN: Final = 64
MAX_NAME_LEN: Final = 100
MAX_DIMENSION: Final = 100_000
MAX_DEPTH: Final = 64
SUM_TOLERANCE: Final = 1e-6

#: The node types in the SPEC's order (prompts and the JSON Schema list them so).
NODE_ORDER: Final = (
    "state",
    "observation",
    "action",
    "likelihood",
    "transition",
    "belief",
    "preference",
    "policy",
    "llm_query",
)
NODE_TYPES: Final = frozenset(NODE_ORDER)
EDGE_TYPES: Final = frozenset({"depends_on", "generates", "influences", "queries", "updates"})

# Variable node type -> (dimension property, names property).
DIMENSIONS: Final[dict[str, tuple[str, str]]] = {
    "state": ("num_states", "state_names"),
    "observation": ("num_observations", "observation_names"),
    "action": ("num_actions", "action_names"),
}
#: Variable node type -> (its size property, the constraint that caps that size).
SIZE_LIMITS: Final[dict[str, tuple[str, str]]] = {
    kind: (dim, "max_" + dim.removeprefix("num_")) for kind, (dim, _) in DIMENSIONS.items()
}
# Reserved property -> node types allowed to carry it (SPEC §1.1).
RESERVED: Final[dict[str, frozenset[str]]] = {
    "matrix": frozenset({"likelihood", "transition"}),
    "distribution": frozenset({"belief"}),
    "vector": frozenset({"preference"}),
    "preferred_observation": frozenset({"preference"}),
}
# Edge type -> allowed (source type, target type) pairs; influences/queries/updates are special.
ALLOWED_PAIRS: Final[dict[str, frozenset[tuple[str, str]]]] = {
    "generates": frozenset({("state", "observation"), ("likelihood", "observation")}),
    "depends_on": frozenset(
        {
            ("state", "likelihood"),
            ("state", "transition"),
            ("action", "transition"),
            ("belief", "state"),
            ("preference", "observation"),
        }
    ),
}

TOP_LEVEL_FIELDS: Final = frozenset(
    {"nodes", "edges", "name", "id", "description", "version", "metadata"}
)
NODE_KEYS: Final = frozenset({"id", "type", "properties", "metadata"})
EDGE_KEYS: Final = frozenset({"source", "target", "type", "properties"})

# Integers with more digits than this certainly overflow a double; they are replaced by a
# representative huge integer so that parsing stays linear-time (CPython caps int() digits).
_MAX_INT_DIGITS: Final = 4000
HUGE_INT: Final = 10**309


def parse_int_token(token: str) -> int:
    """Convert an integer token without CPython's digit limit turning it into an error."""
    digits = len(token) - (1 if token.startswith("-") else 0)
    if digits <= _MAX_INT_DIGITS:
        return int(token)
    return -HUGE_INT if token.startswith("-") else HUGE_INT


def is_integer(value: Any) -> bool:
    """True for a JSON integer (written without fraction/exponent); booleans are not integers."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_finite_float(value: Any) -> float | None:
    """Read a JSON number as a finite double, or None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def is_valid_id(value: str) -> bool:
    """Check a node id against SPEC §1 (ASCII identifier, whole string, at most 64 characters)."""
    return len(value) <= MAX_ID_LEN and ID_RE.fullmatch(value) is not None


def child(path: str, key: str | int) -> str:
    """Extend a JSON path with an object key or array index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if ID_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def show(value: Any, limit: int = 40) -> str:
    """Render a JSON value briefly for a message, never failing on huge numbers."""
    if is_integer(value) and abs(value) >= HUGE_INT:
        return "a huge integer"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value: Any) -> str:
    """Name the JSON type of a value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def err(code: str, path: str, message: str, node: str | None = None) -> GMNError:
    """Build one error record (SPEC §5)."""
    return GMNError(code=code, path=path, node=node, message=message)


def nodes_of(doc: dict[str, Any], kind: str) -> list[tuple[int, dict[str, Any]]]:
    """(index, node) of the document's nodes of type `kind`."""
    return [
        (i, n) for i, n in enumerate(doc["nodes"]) if isinstance(n, dict) and n.get("type") == kind
    ]


def int_property(node: dict[str, Any], prop: str) -> int | None:
    """The node's property `prop` when it is an integer (not a bool), else None."""
    props = node.get("properties")
    value = props.get(prop) if isinstance(props, dict) else None
    return value if type(value) is int else None
