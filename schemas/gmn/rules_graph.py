"""Phases E (graph) and F (dimensions) of GMN validation (SPEC §1.2, rules GMN050-065)."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from ._common import ALLOWED_PAIRS, DIMENSIONS, err, show
from .model import GMNError
from .rules_properties import present_properties

REQUIRED_TYPES = ("state", "observation", "action")


def edge_allowed(edge_type: str, source_type: str, target_type: str) -> bool:
    """Whether SPEC §1.2 allows an edge of this type between these node types."""
    if edge_type == "influences":
        return True
    if edge_type == "queries":
        return target_type == "llm_query" and source_type != "llm_query"
    if edge_type == "updates":
        return source_type == "llm_query" and target_type != "llm_query"
    return (source_type, target_type) in ALLOWED_PAIRS.get(edge_type, frozenset())


@dataclass
class Graph:
    """Resolved view of a structurally valid document (phase C clean)."""

    types: dict[str, str]
    index: dict[str, int]
    # (edge index, source, target, type) for resolved, non-self-loop edges of any type.
    resolved: list[tuple[int, str, str, str]] = field(default_factory=list)
    # The subset of `resolved` allowed by SPEC §1.2: the only edges that count for connections.
    allowed: list[tuple[int, str, str, str]] = field(default_factory=list)


def build_graph(doc: dict[str, Any], errors: list[GMNError] | None = None) -> Graph:
    """Resolve edges; when `errors` is given, append GMN050/051/052 findings to it."""
    nodes: list[dict[str, Any]] = doc["nodes"]
    graph = Graph({n["id"]: n["type"] for n in nodes}, {n["id"]: i for i, n in enumerate(nodes)})
    sink: list[GMNError] = [] if errors is None else errors
    for j, edge in enumerate(doc["edges"]):
        source, target, edge_type = edge["source"], edge["target"], edge["type"]
        dangling = False
        for end, node_id in (("source", source), ("target", target)):
            if node_id not in graph.types:
                dangling = True
                sink.append(
                    err(
                        "GMN050",
                        f"$.edges[{j}].{end}",
                        f"edge {end} {node_id!r} is not the id of any node",
                    )
                )
        if source == target:
            if not dangling:
                sink.append(
                    err(
                        "GMN051",
                        f"$.edges[{j}]",
                        f"edge connects node {source!r} to itself; self-loops are not allowed",
                        source,
                    )
                )
            continue
        if dangling:
            continue
        graph.resolved.append((j, source, target, edge_type))
        s_type, t_type = graph.types[source], graph.types[target]
        if edge_allowed(edge_type, s_type, t_type):
            graph.allowed.append((j, source, target, edge_type))
        else:
            sink.append(
                err(
                    "GMN052",
                    f"$.edges[{j}].type",
                    f"a {edge_type!r} edge may not run "
                    f"from a {s_type} ({source!r}) to a {t_type} ({target!r})",
                    source,
                )
            )
    return graph


def _cycles(graph: Graph) -> list[list[str]]:
    """One concrete cycle per strongly connected component with two or more nodes."""
    succ: dict[str, list[str]] = defaultdict(list)
    for _, source, target, _ in graph.resolved:
        succ[source].append(target)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph.types:
        if root in order:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pos = work[-1]
            nexts = succ[node]
            if pos < len(nexts):
                work[-1] = (node, pos + 1)
                nxt = nexts[pos]
                if nxt not in order:
                    order[nxt] = low[nxt] = len(order)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == order[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(graph, set(c), succ) for c in components]


def _cycle_in(graph: Graph, members: set[str], succ: dict[str, list[str]]) -> list[str]:
    start = min(members, key=lambda n: graph.index[n])
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in succ[node]:
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return sorted(members, key=lambda n: graph.index[n])  # pragma: no cover - SCC has a cycle


def _count_errors(doc: dict[str, Any], graph: Graph) -> list[GMNError]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for _, source, target, edge_type in graph.allowed:
        counts[(source, f"out:{edge_type}")] += 1
        counts[(target, f"in:{edge_type}:{graph.types[source]}")] += 1
    rules: dict[str, list[tuple[str, str]]] = {
        "likelihood": [
            ("in:depends_on:state", "incoming depends_on edges from a state"),
            ("out:generates", "outgoing generates edges to an observation"),
        ],
        "transition": [
            ("in:depends_on:state", "incoming depends_on edges from a state"),
            ("in:depends_on:action", "incoming depends_on edges from an action"),
        ],
        "belief": [("out:depends_on", "outgoing depends_on edges to a state")],
        "preference": [("out:depends_on", "outgoing depends_on edges to an observation")],
    }
    errors: list[GMNError] = []
    for i, node in enumerate(doc["nodes"]):
        node_id, node_type = node["id"], node["type"]
        if node_type == "observation":
            total = counts[(node_id, "in:generates:state")]
            total += counts[(node_id, "in:generates:likelihood")]
            if total > 1:
                errors.append(
                    err(
                        "GMN056",
                        f"$.nodes[{i}]",
                        f"observation {node_id!r} has "
                        f"{total} incoming generates edges; expected at most 1",
                        node_id,
                    )
                )
            continue
        for key, what in rules.get(node_type, []):
            if counts[(node_id, key)] != 1:
                errors.append(
                    err(
                        "GMN056",
                        f"$.nodes[{i}]",
                        f"{node_type} {node_id!r} has "
                        f"{counts[(node_id, key)]} {what}; expected exactly 1",
                        node_id,
                    )
                )
    return errors


def check_graph(doc: dict[str, Any]) -> list[GMNError]:
    """Phase E: references, allowed endpoints, required types, isolation, cycles, counts."""
    errors: list[GMNError] = []
    graph = build_graph(doc, errors)
    present = set(graph.types.values())
    for required in REQUIRED_TYPES:
        if required not in present:
            errors.append(
                err(
                    "GMN053",
                    "$.nodes",
                    f"the document has no {required} node; at "
                    "least one state, one observation and one action are required",
                )
            )
    named = {e["source"] for e in doc["edges"]} | {e["target"] for e in doc["edges"]}
    for i, node in enumerate(doc["nodes"]):
        if node["id"] not in named:
            errors.append(
                err(
                    "GMN054",
                    f"$.nodes[{i}]",
                    f"node {node['id']!r} is isolated: no edge names it as source or target",
                    node["id"],
                )
            )
    for cycle in _cycles(graph):
        first = next(j for j, s, t, _ in graph.resolved if s == cycle[0] and t == cycle[1])
        errors.append(
            err(
                "GMN055",
                f"$.edges[{first}]",
                f"directed cycle {' -> '.join(cycle)}; the graph must be acyclic",
                cycle[0],
            )
        )
    errors.extend(_count_errors(doc, graph))
    return errors


def _dims(doc: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in doc["nodes"]:
        if node["type"] in DIMENSIONS:
            out[node["id"]] = present_properties(node)[DIMENSIONS[node["type"]][0]]
    return out


def check_dimensions(doc: dict[str, Any]) -> list[GMNError]:
    """Phase F: array shapes and lengths against the nodes they are linked to."""
    graph = build_graph(doc)
    dims = _dims(doc)
    inputs: dict[str, dict[str, str]] = defaultdict(dict)  # factor -> {source type: source}
    outputs: dict[str, str] = {}  # factor -> its (single) depends_on/generates target
    errors: list[GMNError] = []
    for j, source, target, edge_type in graph.allowed:
        if edge_type == "depends_on" and graph.types[target] in ("likelihood", "transition"):
            inputs[target][graph.types[source]] = source
        elif edge_type in ("depends_on", "generates") and graph.types[source] != "state":
            outputs[source] = target
        elif edge_type == "generates" and dims[source] != dims[target]:
            errors.append(
                err(
                    "GMN065",
                    f"$.edges[{j}]",
                    f"state {source!r} has {dims[source]} "
                    f"values but observation {target!r} has {dims[target]}; a direct "
                    "generates edge needs equal sizes",
                    target,
                )
            )
    for i, node in enumerate(doc["nodes"]):
        node_id, node_type = node["id"], node["type"]
        props = present_properties(node)
        base = f"$.nodes[{i}].properties"
        if node_type == "likelihood" and "matrix" in props:
            m = props["matrix"]
            want = [dims[outputs[node_id]], dims[inputs[node_id]["state"]]]
            if [len(m), len(m[0])] != want:
                errors.append(
                    err(
                        "GMN060",
                        f"{base}.matrix",
                        f"likelihood matrix has shape "
                        f"{[len(m), len(m[0])]}; expected [num_observations, "
                        f"num_states] = {want}",
                        node_id,
                    )
                )
        elif node_type == "transition" and "matrix" in props:
            m = props["matrix"]
            n_s, n_a = dims[inputs[node_id]["state"]], dims[inputs[node_id]["action"]]
            got = [len(m), len(m[0]), len(m[0][0])]
            if got != [n_s, n_s, n_a]:
                errors.append(
                    err(
                        "GMN061",
                        f"{base}.matrix",
                        f"transition matrix has shape "
                        f"{got}; expected [num_states, num_states, num_actions] = "
                        f"{[n_s, n_s, n_a]}",
                        node_id,
                    )
                )
        elif node_type == "belief" and "distribution" in props:
            want_len = dims[outputs[node_id]]
            if len(props["distribution"]) != want_len:
                errors.append(
                    err(
                        "GMN062",
                        f"{base}.distribution",
                        f"distribution has "
                        f"{len(props['distribution'])} entries; its state "
                        f"{outputs[node_id]!r} has {want_len}",
                        node_id,
                    )
                )
        elif node_type == "preference":
            n_o = dims[outputs[node_id]]
            if "vector" in props and len(props["vector"]) != n_o:
                errors.append(
                    err(
                        "GMN063",
                        f"{base}.vector",
                        f"vector has "
                        f"{len(props['vector'])} entries; observation "
                        f"{outputs[node_id]!r} has {n_o}",
                        node_id,
                    )
                )
            if props.get("preferred_observation", -1) >= n_o:
                errors.append(
                    err(
                        "GMN064",
                        f"{base}.preferred_observation",
                        "preferred_observation"
                        f" {show(props['preferred_observation'])} is out of range; "
                        f"observation {outputs[node_id]!r} has {n_o} values",
                        node_id,
                    )
                )
    return errors
