"""Phase D of GMN validation: node properties (SPEC §1.1, rules GMN040-049)."""

from __future__ import annotations

from math import isfinite
from typing import Any, Final

from ._common import (
    DIMENSIONS,
    MAX_DIMENSION,
    RESERVED,
    SUM_TOLERANCE,
    as_finite_float,
    child,
    err,
    is_integer,
    kind,
    show,
)
from .model import GMNError

_NUMBER_TYPES: Final = (int, float)
# Node type -> (array property, rank, holds probabilities).
ARRAYS: Final[dict[str, tuple[str, int, bool]]] = {
    "likelihood": ("matrix", 2, True),
    "transition": ("matrix", 3, True),
    "belief": ("distribution", 1, True),
    "preference": ("vector", 1, False),
}


def present_properties(node: dict[str, Any]) -> dict[str, Any]:
    """A node's properties with `null` values dropped (SPEC §1: null means absent)."""
    props = node.get("properties")
    if not isinstance(props, dict):
        return {}
    return {k: v for k, v in props.items() if v is not None}


def array_shape(value: Any, rank: int) -> tuple[list[int], list[Any]] | None:
    """Shape and row-major leaves of a non-empty rectangular array of exactly `rank`, else None."""
    shape: list[int] = []
    level: list[Any] = [value]
    for _ in range(rank):
        size: int | None = None
        below: list[Any] = []
        for item in level:
            if not isinstance(item, list) or not item:
                return None
            if size is None:
                size = len(item)
            elif len(item) != size:
                return None
            below.extend(item)
        shape.append(size or 0)
        level = below
    if any(isinstance(leaf, list) for leaf in level):
        return None
    return shape, level


def _index_path(path: str, flat: int, shape: list[int]) -> str:
    indices: list[int] = []
    for size in reversed(shape):
        flat, rem = divmod(flat, size)
        indices.append(rem)
    for index in reversed(indices):
        path = child(path, index)
    return path


def _sum_groups(shape: list[int]) -> list[tuple[str, int, int]]:
    """(label, start, step) of each flat-index group that must sum to 1 (SPEC §1.1)."""
    if len(shape) == 1:
        return [("the distribution", 0, 1)]
    if len(shape) == 2:
        return [(f"column {s} (state {s})", s, shape[1]) for s in range(shape[1])]
    _, states, actions = shape
    return [
        (f"slice (state {s}, action {a})", s * actions + a, states * actions)
        for s in range(states)
        for a in range(actions)
    ]


def finite_numbers(leaves: list[Any]) -> list[float | None]:
    """Each leaf as a finite double, or None where it is not a finite JSON number."""
    try:
        numbers = [float(x) if type(x) in _NUMBER_TYPES else None for x in leaves]
    except OverflowError:  # an integer beyond the double range
        return [as_finite_float(x) for x in leaves]
    return [x if x is not None and isfinite(x) else None for x in numbers]


def _check_array(node_type: str, props: dict[str, Any], base: str, label: str) -> list[GMNError]:
    key, rank, probabilities = ARRAYS[node_type]
    if key not in props:
        return []
    path = child(base, key)
    parsed = array_shape(props[key], rank)
    if parsed is None:
        return [
            err(
                "GMN044",
                path,
                f"{key!r} is not a non-empty rectangular array of rank {rank}",
                label,
            )
        ]
    shape, leaves = parsed
    numbers = finite_numbers(leaves)
    errors = _entry_errors(numbers, leaves, shape, probabilities, path, label)
    if not probabilities:
        return errors
    for what, first, step in _sum_groups(shape):
        group = numbers[first::step]
        total = 0.0
        for number in group:
            if number is None:
                break
            total += number  # left to right, as doubles (SPEC §1.1)
        else:
            if abs(total - 1.0) > SUM_TOLERANCE:
                message = f"{what} of {key!r} sums to {total:.9g}; expected 1 within 1e-6"
                errors.append(err("GMN046", path, message, label))
    return errors


def _entry_errors(
    numbers: list[float | None],
    leaves: list[Any],
    shape: list[int],
    probabilities: bool,
    path: str,
    label: str,
) -> list[GMNError]:
    """GMN044 for entries that are not finite numbers, GMN045 for negative probabilities."""
    errors: list[GMNError] = []
    finite = [n for n in numbers if n is not None]
    if len(finite) == len(numbers) and (not probabilities or min(finite) >= 0):
        return errors
    for flat, number in enumerate(numbers):
        if number is None:
            message = f"entry {show(leaves[flat])} is not a finite number"
            errors.append(err("GMN044", _index_path(path, flat, shape), message, label))
        elif probabilities and number < 0:
            message = f"probability {show(leaves[flat])} is negative; expected a value >= 0"
            errors.append(err("GMN045", _index_path(path, flat, shape), message, label))
    return errors


def _check_variable(node_type: str, props: dict[str, Any], base: str, label: str) -> list[GMNError]:
    dim_key, names_key = DIMENSIONS[node_type]
    errors: list[GMNError] = []
    dim: Any = props.get(dim_key)
    valid_dim: int | None = None
    if dim_key not in props:
        errors.append(
            err(
                "GMN040",
                child(base, dim_key),
                f"{node_type} node has no {dim_key!r}; expected an integer 1..{MAX_DIMENSION}",
                label,
            )
        )
    elif not is_integer(dim) or dim < 1:
        errors.append(
            err(
                "GMN041",
                child(base, dim_key),
                f"{dim_key!r} is {show(dim)}; "
                "expected an integer >= 1 written without fraction or exponent",
                label,
            )
        )
    elif dim > MAX_DIMENSION:
        errors.append(
            err(
                "GMN042",
                child(base, dim_key),
                f"{dim_key!r} is {show(dim)}; at most {MAX_DIMENSION} is allowed",
                label,
            )
        )
    else:
        valid_dim = dim
    if names_key in props:
        errors.extend(_check_names(props[names_key], child(base, names_key), valid_dim, label))
    return errors


def _check_names(names: Any, path: str, dim: int | None, label: str) -> list[GMNError]:
    if not isinstance(names, list):
        return [
            err(
                "GMN043",
                path,
                f"names are {kind(names)}; expected an array of distinct non-empty strings",
                label,
            )
        ]
    errors: list[GMNError] = []
    seen: set[str] = set()
    for k, name in enumerate(names):
        if not isinstance(name, str) or not name:
            errors.append(
                err("GMN043", child(path, k), f"name {show(name)} is not a non-empty string", label)
            )
        elif name in seen:
            errors.append(
                err(
                    "GMN043",
                    child(path, k),
                    f"name {show(name)} repeats an earlier name; names must be distinct",
                    label,
                )
            )
        else:
            seen.add(name)
    if dim is not None and len(names) != dim:
        errors.append(
            err(
                "GMN043",
                path,
                f"{len(names)} names given for dimension {dim}; expected exactly one per value",
                label,
            )
        )
    return errors


def _check_llm_query(props: dict[str, Any], base: str, label: str) -> list[GMNError]:
    errors: list[GMNError] = []
    template = props.get("prompt_template")
    if not isinstance(template, str) or not template.strip():
        what = (
            "missing"
            if template is None
            else ("blank" if isinstance(template, str) else kind(template))
        )
        errors.append(
            err(
                "GMN048",
                child(base, "prompt_template"),
                f"'prompt_template' is {what}; expected a non-blank string",
                label,
            )
        )
    for key in ("trigger_condition", "response_parser"):
        if key in props and not isinstance(props[key], str):
            errors.append(
                err(
                    "GMN048",
                    child(base, key),
                    f"{key!r} is {kind(props[key])}; expected a string",
                    label,
                )
            )
    return errors


def check_properties(doc: dict[str, Any]) -> list[GMNError]:
    """Phase D: dimensions, names, numeric arrays, probabilities and reserved keys per node."""
    errors: list[GMNError] = []
    for i, node in enumerate(doc["nodes"]):
        node_type: str = node["type"]
        label: str = node["id"]
        base = f"$.nodes[{i}].properties"
        props = present_properties(node)
        for key, allowed in RESERVED.items():
            if key in props and node_type not in allowed:
                errors.append(
                    err(
                        "GMN049",
                        child(base, key),
                        f"{key!r} is reserved for "
                        f"{' and '.join(sorted(allowed))} nodes, not {node_type}",
                        label,
                    )
                )
        if node_type in DIMENSIONS:
            errors.extend(_check_variable(node_type, props, base, label))
        elif node_type in ARRAYS:
            errors.extend(_check_array(node_type, props, base, label))
        elif node_type == "llm_query":
            errors.extend(_check_llm_query(props, base, label))
        if node_type == "preference" and "preferred_observation" in props:
            value = props["preferred_observation"]
            if not is_integer(value) or value < 0:
                errors.append(
                    err(
                        "GMN047",
                        child(base, "preferred_observation"),
                        f"'preferred_observation' is {show(value)}; expected an integer index >= 0",
                        label,
                    )
                )
    return errors
