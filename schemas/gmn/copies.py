"""Is an answer a copy? Canonical identity and structure up to renaming (GMN091).

A weak model asked for a trader answers with the explorer example from its instructions,
byte for byte or with new ids; both pass the validator. `copy_of` finds that, and
`StructureIndex` counts how many valid documents of a batch are structurally distinct.

Structure: the directed graph of nodes and edges where a node is labelled by its type and
its sizes (dimensions, matrix/distribution/vector shapes) and an edge by its type; ids,
names, descriptions and probability values are ignored. Two documents have the same
structure when an isomorphism maps one labelled graph onto the other.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ._common import DIMENSIONS, is_integer
from .model import GMNError

COPY_CODE: Final = "GMN091"
_ROUNDS: Final = 3  # colour-refinement rounds; enough to split the small graphs GMN makes


def canonical(doc: dict[str, Any]) -> bytes:
    """The document as sorted-key JSON, nodes by id and edges by endpoints, numbers as floats."""
    nodes = sorted(doc.get("nodes", []), key=lambda n: str(n.get("id", "")))
    edges = sorted(
        doc.get("edges", []),
        key=lambda e: (str(e.get("source")), str(e.get("target")), str(e.get("type"))),
    )
    data = {**doc, "nodes": nodes, "edges": edges}
    return orjson.dumps(_floats(data), option=orjson.OPT_SORT_KEYS)


def _floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if is_integer(value) and abs(value) < 2**53:
        return float(value)
    return value


def _shape(value: Any) -> tuple[int, ...] | None:
    """Sizes of a nested list along its first elements (enough for a valid document)."""
    if not isinstance(value, list):
        return None
    dims: list[int] = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return tuple(dims)


def node_label(node: dict[str, Any]) -> str:
    """Type and sizes of a node, without its id, names or values."""
    kind = str(node.get("type"))
    props = node.get("properties")
    props = props if isinstance(props, dict) else {}
    parts = [kind]
    if kind in DIMENSIONS:
        parts.append(str(props.get(DIMENSIONS[kind][0])))
    for key in ("matrix", "distribution", "vector"):
        if props.get(key) is not None:
            parts.append(f"{key}{_shape(props[key])}")
    if props.get("preferred_observation") is not None:
        parts.append("preferred")
    return ":".join(parts)


@dataclass(frozen=True)
class Structure:
    """A document's labelled graph, with colour-refined labels for fast comparison."""

    labels: dict[str, str]
    out: dict[str, list[tuple[str, str]]]
    inc: dict[str, list[tuple[str, str]]]
    colours: dict[str, str]
    digest: str = field(compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """(nodes, edges)."""
        return len(self.labels), sum(len(v) for v in self.out.values())


def structure(doc: dict[str, Any]) -> Structure | None:
    """The labelled graph of a structurally valid document; None if nodes/edges are unusable."""
    nodes, edges = doc.get("nodes"), doc.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        return None
    labels: dict[str, str] = {}
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            return None
        labels[node["id"]] = node_label(node)
    out: dict[str, list[tuple[str, str]]] = {n: [] for n in labels}
    inc: dict[str, list[tuple[str, str]]] = {n: [] for n in labels}
    for edge in edges:
        if not isinstance(edge, dict):
            return None
        s, t, kind = edge.get("source"), edge.get("target"), str(edge.get("type"))
        if s not in labels or t not in labels:
            continue
        out[str(s)].append((kind, str(t)))
        inc[str(t)].append((kind, str(s)))
    colours = _refine(labels, out, inc)
    digest = hashlib.sha256(
        orjson.dumps([*sorted(Counter(colours.values()).items()), len(edges)])
    ).hexdigest()[:16]
    return Structure(labels, out, inc, colours, digest)


def _refine(
    labels: dict[str, str],
    out: dict[str, list[tuple[str, str]]],
    inc: dict[str, list[tuple[str, str]]],
) -> dict[str, str]:
    """Weisfeiler-Lehman colours: a node's label plus the multiset of its neighbours' colours."""
    colours = dict(labels)
    for _ in range(_ROUNDS):
        colours = {
            n: hashlib.sha1(  # noqa: S324 - a colour, not a security boundary
                orjson.dumps(
                    [
                        colours[n],
                        sorted(f"{k}>{colours[t]}" for k, t in out[n]),
                        sorted(f"{k}<{colours[s]}" for k, s in inc[n]),
                    ]
                )
            ).hexdigest()[:16]
            for n in colours
        }
    return colours


def same_structure(a: Structure, b: Structure) -> bool:
    """Whether a renaming of node ids turns one labelled graph into the other (exact check)."""
    if a.digest != b.digest or a.size != b.size:
        return False
    order = sorted(a.labels, key=lambda n: len(a.out[n]) + len(a.inc[n]), reverse=True)
    by_colour: dict[str, list[str]] = {}
    for n in b.labels:
        by_colour.setdefault(b.colours[n], []).append(n)
    mapping: dict[str, str] = {}
    used: set[str] = set()

    def edges_agree(n: str, m: str) -> bool:
        for kind, t in a.out[n]:
            if t in mapping and (kind, mapping[t]) not in b.out[m]:
                return False
        for kind, s in a.inc[n]:
            if s in mapping and (kind, mapping[s]) not in b.inc[m]:
                return False
        return True

    def extend(i: int) -> bool:
        if i == len(order):
            return Counter(_mapped_edges(a, mapping)) == Counter(_edges(b))
        n = order[i]
        for m in by_colour.get(a.colours[n], []):
            if m in used or not edges_agree(n, m):
                continue
            mapping[n] = m
            used.add(m)
            if extend(i + 1):
                return True
            del mapping[n]
            used.discard(m)
        return False

    return extend(0)


def _edges(s: Structure) -> Iterable[tuple[str, str, str]]:
    return ((src, kind, t) for src, outs in s.out.items() for kind, t in outs)


def _mapped_edges(s: Structure, mapping: dict[str, str]) -> Iterable[tuple[str, str, str]]:
    return ((mapping[src], kind, mapping[t]) for src, kind, t in _edges(s))


def copy_of(
    doc: dict[str, Any], examples: list[tuple[str, dict[str, Any]]]
) -> tuple[str, bool] | None:
    """(example name, verbatim?) when `doc` copies one of the examples, else None."""
    # Cheap tests first: a copy, verbatim or renamed, has the example's node and edge counts
    # and node labels; most answers differ there, before any canonical form is built.
    size = _counts(doc)
    examples = [(name, example) for name, example in examples if _counts(example) == size]
    if examples:
        labels = _labels(doc)
        examples = [(name, example) for name, example in examples if _labels(example) == labels]
    if not examples:
        return None
    mine = canonical(doc)
    for name, example in examples:
        if mine == canonical(example):
            return name, True
    shape = structure(doc)
    if shape is None:
        return None
    for name, example in examples:
        theirs = structure(example)
        if theirs is not None and same_structure(shape, theirs):
            return name, False
    return None


def _counts(doc: dict[str, Any]) -> tuple[int, int]:
    nodes, edges = doc.get("nodes"), doc.get("edges")
    return (
        len(nodes) if isinstance(nodes, list) else -1,
        len(edges) if isinstance(edges, list) else -1,
    )


def _labels(doc: dict[str, Any]) -> list[str]:
    return sorted(node_label(n) if isinstance(n, dict) else "" for n in doc.get("nodes", []))


def check_copy(doc: Any, examples: list[tuple[str, dict[str, Any]]]) -> list[GMNError]:
    """GMN091 when a (valid) document is one of the prompt's examples, verbatim or renamed."""
    if not isinstance(doc, dict) or not examples:
        return []
    found = copy_of(doc, examples)
    if found is None:
        return []
    name, verbatim = found
    if verbatim:
        message = (
            f"the document is the example {name!r} from the instructions, copied; "
            "model the agent the prompt describes instead"
        )
    else:
        message = (
            f"the document has exactly the nodes, edges and sizes of the example {name!r} "
            f"with only names changed{_sizes_text(doc)}; design the states, observations and "
            "actions this prompt needs: count what its agent tells apart and can do"
        )
    return [GMNError(code=COPY_CODE, path="$", message=message)]


def _sizes_text(doc: dict[str, Any]) -> str:
    """`(3 states, 3 observations, 3 actions, as in the example)`: the numbers to change (a
    weak model told only "design your own" answered the same sizes again)."""
    parts = []
    for node in doc.get("nodes", []):
        kind = node.get("type") if isinstance(node, dict) else None
        props = node.get("properties") if kind in DIMENSIONS else None
        size = props.get(DIMENSIONS[kind][0]) if isinstance(props, dict) and kind else None
        if is_integer(size):
            parts.append(f"{size} {kind}s")
    if not parts:
        return ""
    return f" ({', '.join(parts)}, as in the example)"


class StructureIndex:
    """Distinct structures among documents, for a batch's distinct-valid figures.

    Each structure keeps the smallest `round` it was seen in, so "distinct after round r"
    does not depend on the order documents arrive in.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, list[list[Any]]] = {}
        self._first: list[int] = []

    @property
    def distinct(self) -> int:
        """How many distinct structures were seen."""
        return len(self._first)

    def distinct_by(self, round_: int) -> int:
        """Distinct structures seen in rounds up to `round_`."""
        return sum(1 for r in self._first if r <= round_)

    def add(self, doc: dict[str, Any], round_: int = 1) -> bool:
        """Record a document; True when no earlier one had the same structure."""
        shape = structure(doc)
        if shape is None:
            return False
        bucket = self._buckets.setdefault(shape.digest, [])
        for entry in bucket:
            if same_structure(shape, entry[0]):
                index = entry[1]
                self._first[index] = min(self._first[index], round_)
                return False
        bucket.append([shape, len(self._first)])
        self._first.append(round_)
        return True
