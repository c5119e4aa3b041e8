"""Phases B (document shape) and C (structure) of GMN validation (SPEC §3, rules GMN010-034)."""

from __future__ import annotations

from typing import Any

from ._common import (
    EDGE_KEYS,
    EDGE_TYPES,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    NODE_KEYS,
    NODE_TYPES,
    TOP_LEVEL_FIELDS,
    child,
    err,
    is_valid_id,
    kind,
    show,
)
from .model import GMNError


def check_shape(doc: dict[str, Any]) -> list[GMNError]:
    """Phase B: `nodes` and `edges` exist and are arrays, and `nodes` is non-empty."""
    errors: list[GMNError] = []
    for key in ("nodes", "edges"):
        if key not in doc:
            errors.append(err("GMN010", f"$.{key}", f"required field {key!r} is missing"))
        elif not isinstance(doc[key], list):
            errors.append(
                err("GMN011", f"$.{key}", f"{key!r} is {kind(doc[key])}; expected an array")
            )
    nodes = doc.get("nodes")
    if isinstance(nodes, list) and not nodes:
        errors.append(err("GMN012", "$.nodes", "'nodes' is empty; expected at least one node"))
    return errors


def _check_top_level(doc: dict[str, Any]) -> list[GMNError]:
    errors: list[GMNError] = []
    for key, value in doc.items():
        path = child("$", key)
        if key == "name":
            if not isinstance(value, str):
                errors.append(err("GMN013", path, f"'name' is {kind(value)}; expected a string"))
            elif not value.strip():
                errors.append(err("GMN013", path, "'name' is blank; expected visible text"))
            elif len(value) > MAX_NAME_LEN:
                errors.append(
                    err(
                        "GMN013",
                        path,
                        f"'name' has {len(value)} characters; at most {MAX_NAME_LEN} are allowed",
                    )
                )
        elif key in ("id", "description", "version"):
            if not isinstance(value, str):
                errors.append(err("GMN014", path, f"{key!r} is {kind(value)}; expected a string"))
        elif key == "metadata":
            if not isinstance(value, dict):
                errors.append(
                    err("GMN014", path, f"'metadata' is {kind(value)}; expected an object")
                )
        elif key not in TOP_LEVEL_FIELDS:
            errors.append(
                err(
                    "GMN015",
                    path,
                    f"unknown top-level field {key!r}; extra data belongs in 'metadata'",
                )
            )
    return errors


def _check_node(node: dict[str, Any], path: str, seen: set[str]) -> list[GMNError]:
    errors: list[GMNError] = []
    node_id = node.get("id")
    label = node_id if isinstance(node_id, str) else None
    if not isinstance(node_id, str):
        what = "missing" if "id" not in node else f"{kind(node_id)}"
        errors.append(err("GMN021", child(path, "id"), f"node id is {what}; expected a string"))
    else:
        if not is_valid_id(node_id):
            errors.append(
                err(
                    "GMN022",
                    child(path, "id"),
                    f"node id {show(node_id)} is not an ASCII "
                    f"identifier [A-Za-z_][A-Za-z0-9_]* of at most {MAX_ID_LEN} characters",
                    label,
                )
            )
        if node_id in seen:
            errors.append(
                err(
                    "GMN023",
                    child(path, "id"),
                    f"node id {show(node_id)} is "
                    "already used by an earlier node; ids must be unique",
                    label,
                )
            )
        seen.add(node_id)
    node_type = node.get("type")
    if not isinstance(node_type, str):
        what = "missing" if "type" not in node else f"{kind(node_type)}"
        errors.append(
            err("GMN024", child(path, "type"), f"node type is {what}; expected a string", label)
        )
    elif node_type not in NODE_TYPES:
        errors.append(
            err(
                "GMN025",
                child(path, "type"),
                f"unknown node type {show(node_type)}; "
                f"expected one of {', '.join(sorted(NODE_TYPES))}",
                label,
            )
        )
    for key in ("properties", "metadata"):
        if key in node and not isinstance(node[key], dict):
            errors.append(
                err(
                    "GMN026",
                    child(path, key),
                    f"node {key!r} is {kind(node[key])}; expected an object",
                    label,
                )
            )
    for key in node:
        if key not in NODE_KEYS:
            errors.append(
                err(
                    "GMN027",
                    child(path, key),
                    f"unknown node key {key!r}; a node has only id, type, properties and metadata",
                    label,
                )
            )
    return errors


def _check_edge(edge: dict[str, Any], path: str) -> list[GMNError]:
    errors: list[GMNError] = []
    for key in ("source", "target", "type"):
        value = edge.get(key)
        if not isinstance(value, str) or not value:
            what = "missing" if key not in edge else ("empty" if value == "" else kind(value))
            errors.append(
                err(
                    "GMN031",
                    child(path, key),
                    f"edge {key!r} is {what}; expected a non-empty string",
                )
            )
    edge_type = edge.get("type")
    if isinstance(edge_type, str) and edge_type and edge_type not in EDGE_TYPES:
        errors.append(
            err(
                "GMN032",
                child(path, "type"),
                f"unknown edge type {show(edge_type)}; "
                f"expected one of {', '.join(sorted(EDGE_TYPES))}",
            )
        )
    if "properties" in edge and not isinstance(edge["properties"], dict):
        errors.append(
            err(
                "GMN033",
                child(path, "properties"),
                f"edge 'properties' is {kind(edge['properties'])}; expected an object",
            )
        )
    for key in edge:
        if key not in EDGE_KEYS:
            errors.append(
                err(
                    "GMN034",
                    child(path, key),
                    f"unknown edge key {key!r}; an edge "
                    "has only source, target, type and properties",
                )
            )
    return errors


def check_structure(doc: dict[str, Any]) -> list[GMNError]:
    """Phase C: top-level fields, node and edge objects, their keys, ids and types."""
    errors = _check_top_level(doc)
    seen: set[str] = set()
    for i, node in enumerate(doc["nodes"]):
        path = f"$.nodes[{i}]"
        if isinstance(node, dict):
            errors.extend(_check_node(node, path, seen))
        else:
            errors.append(err("GMN020", path, f"node is {kind(node)}; expected an object"))
    for j, edge in enumerate(doc["edges"]):
        path = f"$.edges[{j}]"
        if isinstance(edge, dict):
            errors.extend(_check_edge(edge, path))
        else:
            errors.append(err("GMN030", path, f"edge is {kind(edge)}; expected an object"))
    return errors
