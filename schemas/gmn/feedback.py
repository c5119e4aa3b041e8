"""Feedback that names the real fault: reply-level faults (cut off, no JSON), then the
document's errors grouped by rule, structural ones first, each with its one-line rule and,
for a disallowed edge, the edge types allowed between those two node types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ._common import EDGE_TYPES
from .model import GMNError
from .rules_graph import edge_allowed

TRUNCATED: Final = "GMN080"
NO_JSON: Final = "GMN081"

#: One line per code: the SPEC §4 rule it breaks (or ours, for GMN08x/09x).
RULES: Final[dict[str, str]] = {
    TRUNCATED: "the answer must be complete: it was cut off before the JSON object closed",
    NO_JSON: "the answer must be one JSON object",
    "GMN001": "the input must be strict JSON: no trailing commas, comments, NaN or extra text",
    "GMN002": "text-form lines are `id: type {...}` under [nodes] and `a -> b: type` under [edges]",
    "GMN003": "the top-level value must be a JSON object",
    "GMN010": 'a document has both "nodes" and "edges"',
    "GMN011": '"nodes" and "edges" are arrays',
    "GMN012": '"nodes" has at least one node',
    "GMN013": '"name" is a non-blank string of at most 100 characters',
    "GMN014": '"id", "description", "version" are strings and "metadata" an object',
    "GMN015": "top-level fields are nodes, edges, name, id, description, version, metadata",
    "GMN020": "every node is a JSON object",
    "GMN021": 'every node has a string "id"',
    "GMN022": "a node id matches ^[A-Za-z_][A-Za-z0-9_]*$ and has at most 64 characters",
    "GMN023": "node ids are unique",
    "GMN024": 'every node has a string "type"',
    "GMN025": "node types are state, observation, action, likelihood, transition, belief, "
    "preference, policy, llm_query (lower case)",
    "GMN026": 'a node\'s "properties" and "metadata" are objects',
    "GMN027": "a node has only id, type, properties, metadata; sizes go inside properties",
    "GMN030": "every edge is a JSON object",
    "GMN031": 'an edge has non-empty string "source", "target" and "type" (not from/to)',
    "GMN032": "edge types are depends_on, generates, influences, queries, updates",
    "GMN033": 'an edge\'s "properties" is an object',
    "GMN034": "an edge has only source, target, type, properties",
    "GMN040": "state/observation/action nodes need num_states/num_observations/num_actions",
    "GMN041": 'a size is an integer >= 1 (4, not 4.0 or "4")',
    "GMN042": "a size is at most 100000",
    "GMN043": "*_names is a list of distinct non-empty strings, one per state/observation/action",
    "GMN044": "matrix/distribution/vector are rectangular arrays of finite numbers (A 2-D, B 3-D)",
    "GMN045": "probabilities are >= 0",
    "GMN046": "each likelihood column, transition (state, action) slice and belief sums to 1",
    "GMN047": "preferred_observation is an integer >= 0",
    "GMN048": "an llm_query has a non-blank prompt_template",
    "GMN049": "matrix only on likelihood/transition, distribution on belief, vector and "
    "preferred_observation on preference",
    "GMN050": "edge source and target are ids of nodes in the document",
    "GMN051": "an edge joins two different nodes",
    "GMN052": "an edge type must be allowed between its node types (SPEC §1.2 table)",
    "GMN053": "a document has at least one state, one observation and one action node",
    "GMN054": "every node is the source or target of at least one edge",
    "GMN055": "the graph has no cycles: no edge back from a transition or llm_query upstream",
    "GMN056": "a likelihood has 1 depends_on in and 1 generates out; a transition 1 depends_on "
    "from a state and 1 from an action; a belief/preference 1 depends_on out; an observation "
    "at most 1 generates in",
    "GMN060": "a likelihood matrix has shape [num_observations][num_states]",
    "GMN061": "a transition matrix has shape [num_states][num_states][num_actions]",
    "GMN062": "a belief distribution has num_states entries",
    "GMN063": "a preference vector has num_observations entries",
    "GMN064": "preferred_observation is below num_observations",
    "GMN065": "a state -> observation generates edge joins equal sizes",
    "GMN090": "the request's constraints hold",
    "GMN091": "the answer models this prompt's agent; it is not the example from the instructions",
    "GMN092": "an explorer, trader or coordinator chooses: an action node with 2+ actions",
    "GMN093": "an explorer, trader or coordinator has goals: at least one preference node",
    "GMN094": "actions change the state: a transition fed by depends_on from a state and an action",
    "GMN095": "a coordinator hears several agents: 2+ observation nodes or one with 3+ values",
    "GMN096": "an explorer, trader or coordinator tracks something: a state with 2+ values",
    "GMN097": "sizes the prompt states are kept: a 5x5 grid is 25 states, 'heat, cool or idle' "
    "3 actions",
    "GMN098": "the agents or sensors the prompt names are heard: one observation node each (or "
    "one with a value per agent)",
}

#: Most basic first: reply faults, decoding, shape, missing node types, disallowed edges,
#: then the rest of the graph, structure, properties, sizes, the request's own rules.
_ORDER: Final[tuple[str, ...]] = (
    TRUNCATED,
    NO_JSON,
    "GMN001",
    "GMN002",
    "GMN003",
    "GMN010",
    "GMN011",
    "GMN012",
    "GMN053",
    "GMN052",
    "GMN050",
    "GMN051",
    "GMN055",
    "GMN054",
    "GMN056",
)
_RANK: Final[dict[str, int]] = {code: i for i, code in enumerate(_ORDER)}


def rank(code: str) -> tuple[int, str]:
    """Sort key: listed codes in their order, then every other code by number."""
    return (_RANK.get(code, len(_ORDER)), code)


@dataclass
class Group:
    """The errors of one rule: its one-line rule and one line per occurrence."""

    code: str
    rule: str
    items: list[str] = field(default_factory=list)


def _node_types(document: Any) -> dict[str, str]:
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        return {}
    return {
        n["id"]: n["type"]
        for n in document["nodes"]
        if isinstance(n, dict) and isinstance(n.get("id"), str) and isinstance(n.get("type"), str)
    }


def allowed_edge_types(source_type: str, target_type: str) -> list[str]:
    """The edge types SPEC §1.2 allows from a node of one type to a node of another."""
    return [t for t in sorted(EDGE_TYPES) if edge_allowed(t, source_type, target_type)]


def _edge_index(path: str) -> int | None:
    if not path.startswith("$.edges["):
        return None
    digits = path[len("$.edges[") :].split("]", 1)[0]
    return int(digits) if digits.isdigit() else None


def _alternatives(error: GMNError, document: Any, types: dict[str, str]) -> str:
    """For a disallowed edge: what may run between these two node types instead."""
    index = _edge_index(error.path)
    if error.code != "GMN052" or index is None or not isinstance(document, dict):
        return ""
    edges = document.get("edges")
    if not isinstance(edges, list) or index >= len(edges) or not isinstance(edges[index], dict):
        return ""
    s_type = types.get(edges[index].get("source"))
    t_type = types.get(edges[index].get("target"))
    if s_type is None or t_type is None:
        return ""
    here = allowed_edge_types(s_type, t_type)
    back = [t for t in allowed_edge_types(t_type, s_type) if t != "influences"]
    hint = f"; allowed from {s_type} to {t_type}: {', '.join(here)}"
    if back:
        hint += f" (or reverse it: {t_type} to {s_type} allows {', '.join(back)})"
    return hint


def error_line(error: GMNError) -> str:
    """`- CODE at PATH (node ID): message`, the line format every round has used."""
    node = f" (node {error.node})" if error.node else ""
    return f"- {error.code} at {error.path}{node}: {error.message}"


def group_errors(errors: list[GMNError], document: Any = None) -> list[Group]:
    """Errors grouped by code, most basic rule first, each line with its alternatives."""
    types = _node_types(document)
    groups: dict[str, Group] = {}
    for error in sorted(errors, key=lambda e: rank(e.code)):
        group = groups.get(error.code)
        if group is None:
            rule = RULES.get(error.code, "")
            group = groups[error.code] = Group(error.code, rule)
        group.items.append(error_line(error) + _alternatives(error, document, types))
    return list(groups.values())


def render_groups(groups: list[Group], limit: int | None = None) -> list[str]:
    """Lines of the error list, at most `limit` occurrences; the rest are counted."""
    lines: list[str] = []
    shown = total = 0
    for group in groups:
        total += len(group.items)
        if limit is not None and shown >= limit:
            continue
        lines.append(f"{group.code}: {group.rule}" if group.rule else group.code)
        for item in group.items:
            if limit is not None and shown >= limit:
                break
            lines.append(item)
            shown += 1
    if shown < total:
        lines.append(f"- ... and {total - shown} more errors")
    return lines


TRUNCATION_HEAD: Final = "Your previous answer was cut off"


def truncation_note(output_tokens: int | None, max_tokens: int | None) -> str:
    """What a cut-off answer is told: the budget it ran into and how to fit in it."""
    if max_tokens is not None:
        budget = f"the answer limit of {max_tokens} tokens"
    elif output_tokens:
        budget = f"the endpoint's output limit (about {output_tokens} tokens)"
    else:
        budget = "the endpoint's output limit"
    return (
        f"{TRUNCATION_HEAD} at {budget} before the JSON object was complete, "
        "so nothing in it could be used. Write a complete but more compact document: short "
        "ids, no *_names lists or descriptions, and leave out matrices (consumers use "
        "defaults) unless the prompt needs them."
    )
