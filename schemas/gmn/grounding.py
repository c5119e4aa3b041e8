"""Prompt-grounded checks: what the request's agent type implies (GMN092-GMN096).

A document can follow every SPEC rule and still not answer the request: a "trader" with one
action and no preferences, a "coordinator" that hears a single yes/no report. The rules come
from SPEC §7's agent-type hints (explorer: positions, movement actions, goal or curiosity
preferences; trader: holdings or market regime, buy/sell/hold, profit preferences;
coordinator: task or team progress, assignment actions, completion preferences, reports from
several agents) and hold for every valid example of that type in shared/gmn/examples.
The request's stated constraints (GMN090, `prompts.check_constraints`) win: a rule that
`max_actions: 1` or a `max_nodes` too small for it makes impossible is not applied.

Each check is a plain function of (document, agent type, constraints) so a validator plugin
can call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ._common import int_property, nodes_of
from .model import GMNError
from .prompts import GMNConstraints

_PURPOSE: Final[dict[str, str]] = {
    "explorer": "movement between positions",
    "trader": "buy/sell/hold",
    "coordinator": "assigning tasks to agents",
}
_GOAL: Final[dict[str, str]] = {
    "explorer": "reaching a goal or seeing something new",
    "trader": "profit over loss",
    "coordinator": "tasks being completed",
}
#: The fewest nodes that can hold state, observation, action, transition and preference.
_NODES_FOR_ALL: Final = 5


def _size(node: dict[str, Any], prop: str) -> int:
    return int_property(node, prop) or 0


def _actions(doc: dict[str, Any], agent: str, c: GMNConstraints) -> list[GMNError]:
    if c.max_actions is not None and c.max_actions < 2:
        return []
    actions = nodes_of(doc, "action")
    if not actions or any(_size(n, "num_actions") >= 2 for _, n in actions):
        return []  # no action node at all is GMN053's to report
    i, node = actions[0]
    message = (
        f"a {agent} needs a real choice ({_PURPOSE[agent]}): give an action node at least "
        f"2 actions (this one has {_size(node, 'num_actions')})"
    )
    return [_err("GMN092", f"$.nodes[{i}].properties.num_actions", message, node)]


def _preferences(doc: dict[str, Any], agent: str, c: GMNConstraints) -> list[GMNError]:
    if nodes_of(doc, "preference") or (c.max_nodes is not None and c.max_nodes < _NODES_FOR_ALL):
        return []
    message = (
        f"a {agent} needs preferences for {_GOAL[agent]}: add a preference node with a "
        "depends_on edge to the observation it is about"
    )
    return [_err("GMN093", "$.nodes", message)]


def _transition(doc: dict[str, Any], agent: str, c: GMNConstraints) -> list[GMNError]:
    if c.max_nodes is not None and c.max_nodes < _NODES_FOR_ALL:
        return []
    types = {n.get("id"): n.get("type") for _, n in enumerate(doc["nodes"]) if isinstance(n, dict)}
    feeds: dict[Any, set[Any]] = {}
    for edge in doc.get("edges") or []:
        if isinstance(edge, dict) and edge.get("type") == "depends_on":
            feeds.setdefault(edge.get("target"), set()).add(types.get(edge.get("source")))
    for node_id, kind in types.items():
        if kind == "transition" and {"state", "action"} <= feeds.get(node_id, set()):
            return []
    if not any(kind == "action" for kind in types.values()):
        return []  # GMN053 already says the action node is missing
    message = (
        f"the actions of a {agent} must change its state ({_PURPOSE[agent]}): add a "
        "transition node with depends_on edges from the state and from the action"
    )
    return [_err("GMN094", "$.nodes", message)]


def _reports(doc: dict[str, Any], agent: str, c: GMNConstraints) -> list[GMNError]:
    if agent != "coordinator":
        return []
    observations = nodes_of(doc, "observation")
    limit = c.max_observations
    if not observations or len(observations) >= 2 or (limit is not None and limit < 3):
        return []
    i, node = observations[0]
    if _size(node, "num_observations") >= 3:
        return []
    message = (
        "a coordinator hears reports from several agents: use one observation node per "
        "agent, or give this one at least 3 values"
    )
    return [_err("GMN095", f"$.nodes[{i}].properties.num_observations", message, node)]


def _states(doc: dict[str, Any], agent: str, c: GMNConstraints) -> list[GMNError]:
    states = nodes_of(doc, "state")
    if not states or (c.max_states is not None and c.max_states < 2):
        return []
    if any(_size(n, "num_states") >= 2 for _, n in states):
        return []
    i, node = states[0]
    message = (
        f"a {agent} must track something that changes: give a state node at least 2 states "
        f"(this one has {_size(node, 'num_states')})"
    )
    return [_err("GMN096", f"$.nodes[{i}].properties.num_states", message, node)]


def _err(code: str, path: str, message: str, node: dict[str, Any] | None = None) -> GMNError:
    node_id = node.get("id") if node is not None and isinstance(node.get("id"), str) else None
    return GMNError(code=code, path=path, node=node_id, message=message)


Check = Callable[[dict[str, Any], str, GMNConstraints], list[GMNError]]
_CHECKS: Final[tuple[Check, ...]] = (_states, _actions, _transition, _preferences, _reports)


def check_agent_type(
    document: Any, agent_type: str, constraints: GMNConstraints | None = None
) -> list[GMNError]:
    """GMN092-GMN096 errors for what the agent type implies; nothing for `general`."""
    if agent_type not in _PURPOSE:
        return []
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        return []
    limits = constraints or GMNConstraints()
    return [e for check in _CHECKS for e in check(document, agent_type, limits)]
