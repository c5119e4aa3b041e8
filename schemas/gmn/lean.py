"""The lean profile: short GMN documents a weak model can write under a grammar.

A 0.5B model behind llama.cpp's grammar decoding got 0 of 6 prompts valid with the full
notation: it cannot get numbers and shapes right (matrix orientation, sums to 1, name lists as
long as the dimension) and long answers run into `max_tokens` (GMN080). SPEC §1.1 makes
matrices, distributions, vectors and name lists optional (consumers substitute uniform A,
identity B, uniform D, zero C), so the lean profile leaves them out: a document is the graph
with its sizes.

Its decoding schema states the graph too, as far as JSON Schema can: the document is one of a
few skeletons (`SKELETONS`: the node types in order, and edges between them). Each node id
starts with its slot's prefix (`state_`, `obs_`, ...) and each edge's `source` and `target`
must carry the prefix of the slot it joins, so the edge table (GMN052), the required node types
(GMN053), isolated nodes (GMN054) and connection counts (GMN056) hold by construction as long
as the model repeats its ids. What the grammar leaves to the model: which skeleton, the ids,
the sizes (bounded by the prompt's constraints and, for explorer/trader/coordinator, at least
what the agent type implies), the name. The validator stays the judge: a dangling id, a
duplicate id or a copy of the example is still an error.

llama.cpp's converter (common/json-schema.cpp) reads `prefixItems` as a tuple only when
`items` is absent ("items" wins), so skeletons use `prefixItems` alone with `minItems` =
`maxItems`; `jsonschema` then also rejects extra items (`items: false` is left out because
the converter would read it as the item schema).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import orjson

from ._common import MAX_DIMENSION
from .prompts import ANSWER_INSTRUCTION, GMNConstraints, GMNTaskData, system_text

#: Node type -> id prefix (a second slot of the same type gets a digit: `obs2_`).
PREFIX: Final[dict[str, str]] = {
    "state": "state",
    "observation": "obs",
    "action": "act",
    "likelihood": "lik",
    "transition": "trans",
    "belief": "belief",
    "preference": "pref",
    "policy": "policy",
    "llm_query": "query",
}
#: Largest size the lean schema lets a model write (the prompts need at most 25).
LEAN_MAX_SIZE: Final = 100
_SUFFIX: Final = "[a-z][a-z_]{2,29}"
_SIZES: Final[dict[str, tuple[str, str]]] = {
    "state": ("num_states", "max_states"),
    "observation": ("num_observations", "max_observations"),
    "action": ("num_actions", "max_actions"),
}

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
        (
            ("state", "state"),
            ("observation", "obs"),
            ("observation", "obs2"),
            ("action", "act"),
            ("likelihood", "lik"),
            ("likelihood", "lik2"),
            ("transition", "trans"),
            ("belief", "belief"),
            ("preference", "pref"),
        ),
        (
            (0, 4, "depends_on"),
            (4, 1, "generates"),
            (0, 5, "depends_on"),
            (5, 2, "generates"),
            (0, 6, "depends_on"),
            (3, 6, "depends_on"),
            (7, 0, "depends_on"),
            (8, 1, "depends_on"),
        ),
    ),
    # belief + an llm_query asked on the observation, updating a policy that steers the action
    "llm_advice": (
        _BELIEF[0] + (("policy", "policy"), ("llm_query", "query")),
        _BELIEF[1] + ((1, 8, "queries"), (8, 7, "updates"), (7, 2, "influences")),
    ),
}


def _id_pattern(prefix: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{prefix}_{_SUFFIX}$"}


def _bounds(kind: str, agent_type: str, c: GMNConstraints, observations: int) -> tuple[int, int]:
    """(minimum, maximum) of a lean node's size (at most `LEAN_MAX_SIZE`)."""
    least, most = size_bounds(kind, agent_type, c, observations)
    return least, min(most, LEAN_MAX_SIZE)


def size_bounds(
    kind: str, agent_type: str, c: GMNConstraints, observations: int
) -> tuple[int, int]:
    """(minimum, maximum) of a variable node's size: the constraint caps it; what the agent
    type implies (GMN092/095/096) raises the floor unless the constraint rules that out."""
    _, limit_key = _SIZES[kind]
    limit = getattr(c, limit_key)
    most = limit if limit is not None else MAX_DIMENSION
    least = 1
    if agent_type in ("explorer", "trader", "coordinator") and kind in ("state", "action"):
        least = 2
    if agent_type == "coordinator" and kind == "observation" and observations < 2:
        least = 3
    return min(least, most), most


def _node(kind: str, prefix: str, agent_type: str, c: GMNConstraints, obs: int) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "object",
        "properties": {"id": _id_pattern(prefix), "type": {"const": kind}},
        "required": ["id", "type"],
        "additionalProperties": False,
    }
    props: dict[str, Any] | None = None
    if kind in _SIZES:
        dim = _SIZES[kind][0]
        least, most = _bounds(kind, agent_type, c, obs)
        props = {dim: {"type": "integer", "minimum": least, "maximum": most}}
    elif kind == "llm_query":
        props = {"prompt_template": {"type": "string", "minLength": 1, "maxLength": 120}}
    if props is not None:
        node["properties"]["properties"] = {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }
        node["required"].append("properties")
    return node


def _edge(source: str, target: str, kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "source": _id_pattern(source),
            "target": _id_pattern(target),
            "type": {"const": kind},
        },
        "required": ["source", "target", "type"],
        "additionalProperties": False,
    }


def _tuple(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}


def skeletons_for(c: GMNConstraints) -> list[str]:
    """The skeletons a request's `max_nodes` allows (the smallest one always)."""
    names = [
        name
        for name, (slots, _) in SKELETONS.items()
        if c.max_nodes is None or len(slots) <= c.max_nodes
    ]
    return names or ["core"]


def lean_json_schema(agent_type: str, constraints: GMNConstraints) -> dict[str, Any]:
    """The lean decoding schema for one request: one of its skeletons, sizes within bounds."""
    schema: dict[str, Any] = orjson.loads(_lean_schema(agent_type, constraints.model_dump_json()))
    return schema


@cache
def _lean_schema(agent_type: str, constraints_json: str) -> bytes:
    c = GMNConstraints.model_validate_json(constraints_json)
    documents = []
    for name in skeletons_for(c):
        slots, edges = SKELETONS[name]
        obs = sum(1 for kind, _ in slots if kind == "observation")
        nodes = [_node(kind, prefix, agent_type, c, obs) for kind, prefix in slots]
        wires = [_edge(slots[s][1], slots[t][1], kind) for s, t, kind in edges]
        documents.append(
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 60},
                    "nodes": _tuple(nodes),
                    "edges": _tuple(wires),
                },
                "required": ["name", "nodes", "edges"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "GMN document, lean profile (sizes only; consumers use default matrices)",
    }
    if len(documents) == 1:
        schema |= documents[0]
    else:
        schema["anyOf"] = documents
    return orjson.dumps(schema)


def lean_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A document in the lean form: ids with their type's prefix; no matrices, distributions,
    vectors, names or descriptions. What the lean profile shows as its example (and what a
    copy of it looks like)."""
    renamed: dict[str, str] = {}
    nodes = []
    for node in doc.get("nodes", []):
        kind, old = str(node.get("type")), str(node.get("id"))
        prefix = PREFIX.get(kind, kind)
        renamed[old] = old if old.startswith(f"{prefix}_") else f"{prefix}_{old}"
        props = node.get("properties") or {}
        kept = {k: v for k, v in props.items() if k.startswith("num_") or k == "prompt_template"}
        nodes.append({"id": renamed[old], "type": kind} | ({"properties": kept} if kept else {}))
    edges = [
        {
            "source": renamed.get(e["source"], e["source"]),
            "target": renamed.get(e["target"], e["target"]),
            "type": e["type"],
        }
        for e in doc.get("edges", [])
    ]
    return {"name": doc.get("name", "example"), "nodes": nodes, "edges": edges}


LEAN_RULES: Final = """\
You write GMN (Generative Model Notation) documents: a discrete active-inference agent as a \
directed acyclic graph, as one JSON object {"name", "nodes": [...], "edges": [...]}.
Write the short form: a node is {"id", "type"} and state, observation and action nodes add \
"properties" with their size only (num_states, num_observations, num_actions). Leave out \
matrices, distributions, vectors and name lists: defaults are used.
Node ids start with their type's prefix and then say what they stand for: state_, obs_, act_, \
lik_ (likelihood: how the state produces the observation), trans_ (transition: how the state \
changes under the action), belief_ (initial belief over the state), pref_ (preference over \
the observation), policy_, query_ (llm_query, with a prompt_template).
Edges, each {"source", "target", "type"} between existing ids: state -> lik depends_on, \
lik -> obs generates, state -> trans depends_on, act -> trans depends_on, belief -> state \
depends_on, pref -> obs depends_on, obs -> query queries, query -> policy updates, policy -> \
act influences.
Choose the sizes from the description: count the positions, regimes, levels or phases the \
agent tells apart (a 5x5 grid has 25 positions), the readings it can observe and the moves or \
choices it has.
"""


#: The one fault `auto` refines in the full notation: a copy of the example (the lean
#: example is as easy to copy). Every other fault — cut-off answers, numbers and shapes,
#: and graph rules (edge table, required types, connection counts, cycles, agent type) — the
#: lean skeleton rules out, and in the real-model runs no full-notation refine round fixed
#: one (6 prompts, 3 rounds, best-of-3: 0 of 8 refine/fresh rounds in the full notation).
KEPT_CODES: Final = frozenset({"GMN091"})
SIMPLIFY_HEAD: Final = "Your earlier answer was rejected"


def simplified(data: GMNTaskData, codes: list[str], truncated: bool) -> GMNTaskData | None:
    """The task data of an `auto` job switched to lean after these faults, or None to refine
    as usual (another profile, or only a copy of the example)."""
    if data.profile != "auto" or not (truncated or set(codes) - KEPT_CODES):
        return None
    keys = [key if key.startswith("lean:") else f"lean:{key}" for key in data.examples]
    return data.model_copy(update={"profile": "lean", "examples": keys})


def simplify_note(codes: list[str], truncated: bool) -> str:
    """Why the next round asks for the short form."""
    shown = [c for c in codes if c not in KEPT_CODES]
    why = "it was cut off" if truncated else f"it broke rules ({', '.join(shown)})"
    return (
        f"{SIMPLIFY_HEAD}: {why}. Write the short form described above instead: sizes and "
        f"graph only, no matrices, distributions, vectors or name lists.\n{ANSWER_INSTRUCTION}"
    )


def lean_system(data: GMNTaskData) -> str:
    """The lean system message for a job's agent type, constraints and (lean) examples."""
    keys = [] if data.hidden_examples else data.examples
    return system_text(data.agent_type, data.constraints, keys, lean=True)


NO_EXAMPLE_HEAD: Final = "Your earlier answer copied the example from the instructions"


def unexampled(data: GMNTaskData, codes: list[str]) -> GMNTaskData | None:
    """A lean job whose answer copied the example: the next rounds show none (a 0.5B model
    told "design your own" in refine and fresh rounds answered the example's sizes again in
    every round); copies of it still count. None when this does not apply."""
    if data.profile != "lean" or data.hidden_examples or not data.examples:
        return None
    if "GMN091" not in codes:
        return None
    return data.model_copy(update={"hidden_examples": True})


def no_example_note(message: str) -> str:
    """Why the next round shows no example."""
    return (
        f"{NO_EXAMPLE_HEAD} ({message}); it is left out now. Model the agent this prompt "
        f"describes: choose the skeleton and the sizes from the description.\n"
        f"{ANSWER_INSTRUCTION}"
    )
