"""The complete GMN examples a prompt may show (SPEC §6), and which one a prompt shows.

The reviewer needs the exact text a model saw to tell a copy of it from a real answer
(`copies.py`), so the examples live here, one string each, and the task data names the ones
a prompt showed.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson

ExampleChoice = Literal["explorer", "contrast", "none"]
EXAMPLE_CHOICES: Final[tuple[str, ...]] = ("explorer", "contrast", "none")

#: SPEC §6's explorer, compact (no names, no description): the example every prompt showed
#: before the choice existed, so it stays byte-identical.
EXPLORER: Final = (
    '{"name": "grid_explorer_2x2", "nodes": ['
    '{"id": "cell", "type": "state", "properties": {"num_states": 4}}, '
    '{"id": "seen_cell", "type": "observation", "properties": {"num_observations": 4}}, '
    '{"id": "step", "type": "action", "properties": {"num_actions": 5, "action_names":'
    ' ["north", "south", "east", "west", "stay"]}}, '
    '{"id": "cell_sensor", "type": "likelihood", "properties": {"matrix": [[0.85, 0.05, 0.05,'
    " 0.05], [0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05], [0.05, 0.05, 0.05, 0.85]]}}, "
    '{"id": "cell_dynamics", "type": "transition"}, '
    '{"id": "start_belief", "type": "belief", "properties": {"distribution": [0.25, 0.25, 0.25,'
    " 0.25]}}, "
    '{"id": "goal", "type": "preference", "properties": {"vector": [0.0, 0.0, 0.0, 3.0]}}], '
    '"edges": ['
    '{"source": "cell", "target": "cell_sensor", "type": "depends_on"}, '
    '{"source": "cell_sensor", "target": "seen_cell", "type": "generates"}, '
    '{"source": "cell", "target": "cell_dynamics", "type": "depends_on"}, '
    '{"source": "step", "target": "cell_dynamics", "type": "depends_on"}, '
    '{"source": "start_belief", "target": "cell", "type": "depends_on"}, '
    '{"source": "goal", "target": "seen_cell", "type": "depends_on"}]}'
)

#: SPEC §6's trader: 6 nodes, no belief, a full transition matrix.
TRADER: Final = (
    '{"name": "position_trader", "nodes": ['
    '{"id": "holding", "type": "state", "properties": {"num_states": 3}}, '
    '{"id": "pnl_signal", "type": "observation", "properties": {"num_observations": 3}}, '
    '{"id": "order", "type": "action", "properties": {"num_actions": 3, "action_names":'
    ' ["buy", "sell", "hold"]}}, '
    '{"id": "pnl_model", "type": "likelihood", "properties": {"matrix": [[0.6, 0.3, 0.2],'
    " [0.3, 0.4, 0.3], [0.1, 0.3, 0.5]]}}, "
    '{"id": "book_update", "type": "transition", "properties": {"matrix": [[[0, 1, 1], [0, 1, 0],'
    " [0, 0, 0]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 0, 0], [1, 0, 0], [1, 0, 1]]]}}, "
    '{"id": "likes_gains", "type": "preference", "properties": {"vector": [-2.0, 0.0, 2.0],'
    ' "preferred_observation": 2}}], '
    '"edges": ['
    '{"source": "holding", "target": "pnl_model", "type": "depends_on"}, '
    '{"source": "pnl_model", "target": "pnl_signal", "type": "generates"}, '
    '{"source": "holding", "target": "book_update", "type": "depends_on"}, '
    '{"source": "order", "target": "book_update", "type": "depends_on"}, '
    '{"source": "likes_gains", "target": "pnl_signal", "type": "depends_on"}]}'
)

#: SPEC §6's coordinator: 9 nodes with a policy and an llm_query.
COORDINATOR: Final = (
    '{"name": "task_coordinator", "nodes": ['
    '{"id": "task_phase", "type": "state", "properties": {"num_states": 3}}, '
    '{"id": "worker_report", "type": "observation", "properties": {"num_observations": 3}}, '
    '{"id": "assign", "type": "action", "properties": {"num_actions": 4, "action_names":'
    ' ["to_w1", "to_w2", "to_w3", "wait"]}}, '
    '{"id": "report_model", "type": "likelihood", "properties": {"matrix": [[0.8, 0.1, 0.0],'
    " [0.2, 0.8, 0.1], [0.0, 0.1, 0.9]]}}, "
    '{"id": "progress", "type": "transition"}, '
    '{"id": "phase_prior", "type": "belief", "properties": {"distribution": [1.0, 0.0, 0.0]}}, '
    '{"id": "finish_tasks", "type": "preference", "properties": {"preferred_observation": 2}}, '
    '{"id": "team_plan", "type": "policy"}, '
    '{"id": "planner", "type": "llm_query", "properties": {"prompt_template": "Workers report'
    ' {obs}. Who should take the next task?", "trigger_condition": "on_observation"}}], '
    '"edges": ['
    '{"source": "task_phase", "target": "report_model", "type": "depends_on"}, '
    '{"source": "report_model", "target": "worker_report", "type": "generates"}, '
    '{"source": "task_phase", "target": "progress", "type": "depends_on"}, '
    '{"source": "assign", "target": "progress", "type": "depends_on"}, '
    '{"source": "phase_prior", "target": "task_phase", "type": "depends_on"}, '
    '{"source": "finish_tasks", "target": "worker_report", "type": "depends_on"}, '
    '{"source": "worker_report", "target": "planner", "type": "queries"}, '
    '{"source": "planner", "target": "team_plan", "type": "updates"}, '
    '{"source": "team_plan", "target": "assign", "type": "influences"}]}'
)

#: Example key -> (what the prompt calls it, the document text).
EXAMPLES: Final[dict[str, tuple[str, str]]] = {
    "explorer": ("an explorer", EXPLORER),
    "trader": ("a trader", TRADER),
    "coordinator": ("a coordinator", COORDINATOR),
}

#: For `contrast`: an example whose shape is far from what the agent type asks for, so a
#: copy cannot pass for an answer and the model sees the notation, not a template.
_CONTRAST: Final[dict[str, str]] = {
    "explorer": "trader",
    "trader": "coordinator",
    "coordinator": "explorer",
    "general": "coordinator",
}

#: Shown instead of a complete example (`none`): the syntax of one node and one edge.
SYNTAX_ONLY: Final = (
    "Syntax (not a complete document): a node looks like "
    '{"id": "where", "type": "state", "properties": {"num_states": 3}} and an edge like '
    '{"source": "where", "target": "where_model", "type": "depends_on"}.'
)


#: Marks an example key as shown in the lean form (`lean.lean_document`): `lean:trader`.
LEAN_KEY: Final = "lean:"


def examples_for(agent_type: str, choice: ExampleChoice, lean: bool = False) -> list[str]:
    """Which complete examples (keys of `EXAMPLES`, `lean:` before them when shown in the
    lean form) a prompt for this agent type shows."""
    if choice == "none":
        return []
    key = _CONTRAST.get(agent_type, "coordinator") if choice == "contrast" else "explorer"
    return [f"{LEAN_KEY}{key}" if lean else key]


def _example(key: str) -> tuple[str, str] | None:
    """(label, document text) of an example key, the lean form derived from the full one."""
    lean = key.startswith(LEAN_KEY)
    found = EXAMPLES.get(key.removeprefix(LEAN_KEY))
    if found is None or not lean:
        return found
    from .lean import lean_document

    return found[0], orjson.dumps(lean_document(orjson.loads(found[1]))).decode()


#: `SYNTAX_ONLY` in the lean form (prefixed ids, sizes only).
LEAN_SYNTAX_ONLY: Final = (
    "Syntax (not a complete document): a node looks like "
    '{"id": "state_where", "type": "state", "properties": {"num_states": 3}} and an edge like '
    '{"source": "state_where", "target": "lik_where_sensor", "type": "depends_on"}.'
)


def example_block(keys: list[str], lean: bool = False) -> str:
    """The example part of a system prompt: each named example on its own line, or the syntax."""
    if not keys:
        return LEAN_SYNTAX_ONLY if lean else SYNTAX_ONLY
    parts = []
    for key in keys:
        found = _example(key)
        if found is None:
            continue
        label, text = found
        parts.append(f"Example ({label}):\n{text}")
    return "\n".join(parts)


def example_documents(keys: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(name, document) of each example shown, as the copy check compares them."""
    out = []
    for key in keys:
        found = _example(key)
        if found is not None:
            doc = orjson.loads(found[1])
            out.append((str(doc.get("name", key)), doc))
    return out
