"""Builders of large valid GMN documents for validator benchmarks."""

from __future__ import annotations

from typing import Any


def _uniform(n: int) -> list[float]:
    return [1.0 / n] * n


def _likelihood(n_obs: int, n_states: int) -> list[list[float]]:
    """A column-stochastic A matrix: mostly diagonal, rest spread evenly."""
    if n_obs == 1:
        return [[1.0] * n_states]
    off = 0.1 / (n_obs - 1)
    return [[0.9 if o == s % n_obs else off for s in range(n_states)] for o in range(n_obs)]


def _transition(n_states: int, n_actions: int) -> list[list[list[float]]]:
    """A B matrix where action a moves state s to (s + a) mod n_states."""
    return [
        [
            [1.0 if nxt == (s + a) % n_states else 0.0 for a in range(n_actions)]
            for s in range(n_states)
        ]
        for nxt in range(n_states)
    ]


def validator_benchmark_document(n_nodes: int, size: int = 4) -> dict[str, Any]:
    """Build a valid document of about `n_nodes` nodes (at least 7) so benchmarks scale it."""
    nodes: list[dict[str, Any]] = [
        {"id": "act", "type": "action", "properties": {"num_actions": 3}},
    ]
    edges: list[dict[str, Any]] = []
    k = 0
    while len(nodes) + 7 <= max(n_nodes, 8) or k == 0:
        s, o, a, b, d, c = (f"s{k}", f"o{k}", f"A{k}", f"B{k}", f"D{k}", f"C{k}")
        nodes += [
            {
                "id": s,
                "type": "state",
                "properties": {"num_states": size, "state_names": [f"v{i}" for i in range(size)]},
            },
            {"id": o, "type": "observation", "properties": {"num_observations": size}},
            {"id": a, "type": "likelihood", "properties": {"matrix": _likelihood(size, size)}},
            {"id": b, "type": "transition", "properties": {"matrix": _transition(size, 3)}},
            {"id": d, "type": "belief", "properties": {"distribution": _uniform(size)}},
            {
                "id": c,
                "type": "preference",
                "properties": {
                    "vector": [float(i) for i in range(size)],
                    "preferred_observation": size - 1,
                },
            },
        ]
        edges += [
            {"source": s, "target": a, "type": "depends_on"},
            {"source": a, "target": o, "type": "generates"},
            {"source": s, "target": b, "type": "depends_on"},
            {"source": "act", "target": b, "type": "depends_on"},
            {"source": d, "target": s, "type": "depends_on"},
            {"source": c, "target": o, "type": "depends_on"},
        ]
        k += 1
    while len(nodes) < n_nodes:
        pid = f"plan{len(nodes)}"
        nodes.append({"id": pid, "type": "policy"})
        edges.append({"source": pid, "target": "act", "type": "influences"})
    return {"name": f"benchmark_{n_nodes}", "nodes": nodes, "edges": edges}
