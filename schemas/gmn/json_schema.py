"""The GMN JSON Schema (draft 2020-12), derived from SPEC §1, for constrained decoding.

It states what a schema can: top-level fields, node and edge keys, id syntax, the nine node
types with their required and reserved properties, sizes, array ranks, non-negative
probabilities, the five edge types, and (outside decoding) at least one state, observation
and action. It cannot state what depends on other values: that edges join existing ids of
allowed types, sums to 1, matrix shapes against the linked sizes, names-list lengths, cycles,
connection counts; and JSON Schema's "integer" accepts 4.0, which SPEC does not. The
validator (`validate_gmn`) stays the judge; the schema keeps a constrained model inside the
notation so refine rounds deal only with the rest.

`gmn_json_schema(decoding=True)` leaves out keywords grammar-based decoders (llama.cpp's
json_schema, vLLM's guided decoding backends) commonly reject or ignore: `contains`,
`uniqueItems` and unanchored patterns. It bounds every array instead (`maxItems`): under a
grammar a small model that starts repeating nodes or matrix rows cannot close the array until
`max_tokens` cuts the answer off (seen with a 0.5B model on llama.cpp: GMN080 was the most
frequent final code); the bounds sit well above every example and prompt constraint.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from jsonschema import Draft202012Validator

from ._common import (
    DIMENSIONS,
    EDGE_TYPES,
    MAX_DIMENSION,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    NODE_ORDER,
)

SCHEMA_ID: Final = "https://batchyard.dev/schemas/gmn/v1.json"
_NULL: Final[dict[str, Any]] = {"type": "null"}
_RESERVED: Final = ("matrix", "distribution", "vector", "preferred_observation")
#: Decoding bounds: the examples have at most 11 nodes, 11 edges and 9 items per array; the
#: prompts ask for at most 25 states.
DECODED_NODES: Final = 24
DECODED_EDGES: Final = 40
DECODED_ITEMS: Final = 32


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`null` counts as absent inside properties (SPEC §1)."""
    return {"anyOf": [schema, _NULL]}


def _array(items: dict[str, Any], decoding: bool) -> dict[str, Any]:
    return _bounded({"type": "array", "minItems": 1, "items": items}, DECODED_ITEMS, decoding)


def _bounded(array: dict[str, Any], most: int, decoding: bool) -> dict[str, Any]:
    """The array with `maxItems` when decoding (a grammar cannot then loop until cut off)."""
    return array | {"maxItems": most} if decoding else array


def _non_blank(decoding: bool) -> dict[str, Any]:
    if decoding:
        return {"type": "string", "minLength": 1}
    return {"type": "string", "pattern": r"\S"}


def _properties(kind: str, decoding: bool) -> tuple[dict[str, Any], list[str]]:
    """The `properties` object of one node type and its required keys."""
    probability = {"type": "number", "minimum": 0}
    size = {"type": "integer", "minimum": 1, "maximum": MAX_DIMENSION}
    names = _bounded(
        {"type": "array", "items": {"type": "string", "minLength": 1}}, DECODED_ITEMS, decoding
    )
    if not decoding:
        names["uniqueItems"] = True
    props: dict[str, Any] = {key: _NULL for key in _RESERVED}
    required: list[str] = []
    if kind in DIMENSIONS:
        dim, names_key = DIMENSIONS[kind]
        props[dim] = size
        props[names_key] = _nullable(names)
        required.append(dim)
    elif kind == "likelihood":
        props["matrix"] = _nullable(_array(_array(probability, decoding), decoding))
    elif kind == "transition":
        props["matrix"] = _nullable(
            _array(_array(_array(probability, decoding), decoding), decoding)
        )
    elif kind == "belief":
        props["distribution"] = _nullable(_array(probability, decoding))
    elif kind == "preference":
        props["vector"] = _nullable(_array({"type": "number"}, decoding))
        props["preferred_observation"] = _nullable({"type": "integer", "minimum": 0})
    elif kind == "llm_query":
        props["prompt_template"] = _non_blank(decoding)
        props["trigger_condition"] = _nullable({"type": "string"})
        props["response_parser"] = _nullable({"type": "string"})
        required.append("prompt_template")
    schema = {"type": "object", "properties": props, "additionalProperties": True}
    if required:
        schema["required"] = required
    return schema, required


def _node(kind: str, decoding: bool) -> dict[str, Any]:
    props, required = _properties(kind, decoding)
    return {
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "maxLength": MAX_ID_LEN,
            },
            "type": {"const": kind},
            "properties": props,
            "metadata": {"type": "object"},
        },
        "required": ["id", "type", "properties"] if required else ["id", "type"],
        "additionalProperties": False,
    }


def _has(kind: str) -> dict[str, Any]:
    return {"contains": {"type": "object", "properties": {"type": {"const": kind}}}}


def gmn_json_schema(decoding: bool = False) -> dict[str, Any]:
    """The schema as a fresh dict; `decoding` drops what grammar-based decoders reject."""
    nodes: dict[str, Any] = _bounded(
        {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [_node(kind, decoding) for kind in NODE_ORDER]},
        },
        DECODED_NODES,
        decoding,
    )
    if not decoding:
        nodes["allOf"] = [_has(kind) for kind in ("state", "observation", "action")]
    edge = {
        "type": "object",
        "properties": {
            "source": {"type": "string", "minLength": 1},
            "target": {"type": "string", "minLength": 1},
            "type": {"enum": sorted(EDGE_TYPES)},
            "properties": {"type": "object"},
        },
        "required": ["source", "target", "type"],
        "additionalProperties": False,
    }
    name = _non_blank(decoding) | {"maxLength": MAX_NAME_LEN}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "GMN document (Generative Model Notation v1)",
        "type": "object",
        "properties": {
            "name": name,
            "id": {"type": "string"},
            "description": {"type": "string"},
            "version": {"type": "string"},
            "metadata": {"type": "object"},
            "nodes": nodes,
            "edges": _bounded({"type": "array", "items": edge}, DECODED_EDGES, decoding),
        },
        "required": ["nodes", "edges"],
        "additionalProperties": False,
    }


@cache
def _validator(decoding: bool) -> Draft202012Validator:
    schema = gmn_json_schema(decoding)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(document: Any, decoding: bool = False) -> list[str]:
    """What the schema finds wrong with a decoded document, as `JSON-pointer: message` lines."""
    found = sorted(
        _validator(decoding).iter_errors(document), key=lambda e: [str(p) for p in e.path]
    )
    return [f"/{'/'.join(str(p) for p in e.path)}: {e.message}" for e in found]


def grounded_schema(agent_type: str, constraints: Any) -> dict[str, Any]:
    """The decoding schema with the request's size bounds: `max_states` etc. as `maximum`
    (GMN090), and for explorer/trader/coordinator at least 2 states and 2 actions (GMN096,
    GMN092) unless a constraint rules that out. `constraints` is a `GMNConstraints`."""
    from .lean import size_bounds

    schema = gmn_json_schema(decoding=True)
    for node in schema["properties"]["nodes"]["items"]["anyOf"]:
        kind = node["properties"]["type"]["const"]
        props = node["properties"]["properties"]["properties"]
        for dim in [key for key in props if key.startswith("num_")]:
            least, most = size_bounds(kind, agent_type, constraints, observations=2)
            props[dim] = props[dim] | {"minimum": least, "maximum": min(most, MAX_DIMENSION)}
    return schema
