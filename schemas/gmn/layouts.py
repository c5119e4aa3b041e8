"""Lean layouts: which nodes a short GMN document has and how edges join them.

`SKELETONS` are the four graphs of the lean profile since session 7 (ids chosen by the model
under each slot's prefix); `EXTRA_LAYOUTS` and `teamN` (`team`) are the layouts a prompt can
suggest (`stated.suggested_layouts`): two state factors, a goal above the moves, one
observation node per agent. A slot is (node type, id prefix); an edge is (source slot, target
slot, edge type). In a grounded schema each slot's id is fixed (`slot_id`), so edges can name
it by `const`.
"""

from __future__ import annotations

from typing import Final

Slots = tuple[tuple[str, str], ...]
Edges = tuple[tuple[int, int, str], ...]

#: Slots 0-4 of most skeletons: state, observation, action, and the likelihood and transition
#: that tie them (edges as (source slot, target slot, edge type)).
_BASE: Final[tuple[Slots, Edges]] = (
    (
        ("state", "state"),
        ("observation", "obs"),
        ("action", "act"),
        ("likelihood", "lik"),
        ("transition", "trans"),
    ),
    ((0, 3, "depends_on"), (3, 1, "generates"), (0, 4, "depends_on"), (2, 4, "depends_on")),
)
#: The base + an initial belief over the state (slot 5) and a preference (slot 6).
_BELIEF: Final[tuple[Slots, Edges]] = (
    _BASE[0] + (("belief", "belief"), ("preference", "pref")),
    _BASE[1] + ((5, 0, "depends_on"), (6, 1, "depends_on")),
)

#: name -> (slots as (type, prefix), edges as (source slot, target slot, edge type)).
SKELETONS: Final[dict[str, tuple[Slots, Edges]]] = {
    # the base + a preference over the observation
    "core": (_BASE[0] + (("preference", "pref"),), _BASE[1] + ((5, 1, "depends_on"),)),
    "belief": _BELIEF,
    # two observation modalities of one state, each through its own likelihood
    "two_sensors": (
        _BASE[0]
        + (
            ("observation", "obs2"),
            ("likelihood", "lik2"),
            ("belief", "belief"),
            ("preference", "pref"),
        ),
        _BASE[1]
        + ((0, 6, "depends_on"), (6, 5, "generates"), (7, 0, "depends_on"), (8, 1, "depends_on")),
    ),
    # belief + an llm_query asked on the observation, updating a policy that steers the action
    "llm_advice": (
        _BELIEF[0] + (("policy", "policy"), ("llm_query", "query")),
        _BELIEF[1] + ((1, 8, "queries"), (8, 7, "updates"), (7, 2, "influences")),
    ),
}


#: Layouts for what a prompt describes (`stated.suggested_layouts`), beside `SKELETONS`.
EXTRA_LAYOUTS: Final[dict[str, tuple[Slots, Edges]]] = {
    # two state factors (a position and a resource, the market and a holding), each observed
    # through its own likelihood and moved by the one action through its own transition
    "two_factor": (
        _BASE[0]
        + (
            ("state", "state2"),
            ("observation", "obs2"),
            ("likelihood", "lik2"),
            ("transition", "trans2"),
            ("preference", "pref"),
        ),
        _BASE[1]
        + (
            (5, 7, "depends_on"),
            (7, 6, "generates"),
            (5, 8, "depends_on"),
            (2, 8, "depends_on"),
            (9, 1, "depends_on"),
        ),
    ),
    # a goal or context state above the moves (with its own belief) steering a policy that
    # influences the action
    "hierarchical": (
        _BASE[0]
        + (("state", "state2"), ("belief", "belief"), ("policy", "policy"), ("preference", "pref")),
        _BASE[1]
        + ((6, 5, "depends_on"), (5, 7, "influences"), (7, 2, "influences"), (8, 1, "depends_on")),
    ),
}
#: Agents a `teamN` layout can hear, one observation node (and likelihood) each.
TEAM_SIZES: Final = range(2, 5)
#: Each slot's id in a grounded schema: `{prefix}_{word}`, the word by agent type (a layout's
#: own word for a slot first).
_WORDS: Final[dict[str, dict[str, str]]] = {
    "explorer": {
        "state": "position",
        "observation": "view",
        "action": "move",
        "likelihood": "sensing",
        "transition": "motion",
        "belief": "prior",
        "preference": "goal",
        "policy": "plan",
        "llm_query": "advice",
        "state2": "energy",
    },
    "trader": {
        "state": "market",
        "observation": "price",
        "action": "order",
        "likelihood": "pricing",
        "transition": "market_move",
        "belief": "prior",
        "preference": "profit",
        "policy": "plan",
        "llm_query": "advice",
        "state2": "holding",
    },
    "coordinator": {
        "state": "tasks",
        "observation": "report",
        "action": "assign",
        "likelihood": "reporting",
        "transition": "progress",
        "belief": "prior",
        "preference": "done",
        "policy": "plan",
        "llm_query": "advice",
        "state2": "load",
    },
    "general": {
        "state": "world",
        "observation": "signal",
        "action": "choice",
        "likelihood": "sensing",
        "transition": "dynamics",
        "belief": "prior",
        "preference": "wish",
        "policy": "plan",
        "llm_query": "advice",
        "state2": "context",
    },
}
_LAYOUT_WORDS: Final[dict[tuple[str, str], str]] = {
    ("hierarchical", "state2"): "goal",
    ("hierarchical", "belief"): "goal_prior",
}


def team(agents: int) -> tuple[Slots, Edges]:
    """`teamN`: one state heard through N observation nodes (one per agent), each through its
    own likelihood; an action, its transition, a belief and a preference."""
    obs = tuple(("observation", "obs" if i == 0 else f"obs{i + 1}") for i in range(agents))
    liks = tuple(("likelihood", "lik" if i == 0 else f"lik{i + 1}") for i in range(agents))
    slots: Slots = (
        ("state", "state"),
        *obs,
        *liks,
        ("action", "act"),
        ("transition", "trans"),
        ("belief", "belief"),
        ("preference", "pref"),
    )
    act, trans = 1 + 2 * agents, 2 + 2 * agents
    edges: Edges = (
        *((0, 1 + agents + i, "depends_on") for i in range(agents)),
        *((1 + agents + i, 1 + i, "generates") for i in range(agents)),
        (0, trans, "depends_on"),
        (act, trans, "depends_on"),
        (trans + 1, 0, "depends_on"),
        (trans + 2, 1, "depends_on"),
    )
    return slots, edges


def layout(name: str) -> tuple[Slots, Edges] | None:
    """A skeleton, an extra layout or `teamN` by name; None for an unknown name."""
    if name in SKELETONS:
        return SKELETONS[name]
    if name in EXTRA_LAYOUTS:
        return EXTRA_LAYOUTS[name]
    if name.startswith("team") and name[4:].isdigit() and int(name[4:]) in TEAM_SIZES:
        return team(int(name[4:]))
    return None


def slot_id(name: str, prefix: str, kind: str, agent_type: str) -> str:
    """A slot's fixed id in a grounded schema (edges name it by `const`: no dangling ids)."""
    words = _WORDS.get(agent_type, _WORDS["general"])
    word = _LAYOUT_WORDS.get((name, prefix)) or words.get(prefix) or words[kind]
    return f"{prefix}_{word}"
