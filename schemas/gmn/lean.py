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

from ._common import MAX_DIMENSION, SIZE_LIMITS
from .copies import same_structure, structure
from .layouts import SKELETONS as SKELETONS
from .layouts import Edges, Slots, layout, slot_id
from .prompts import ANSWER_INSTRUCTION, GMNConstraints, GMNTaskData, system_text
from .stated import StatedSize

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


def _id_pattern(prefix: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{prefix}_{_SUFFIX}$"}


def _bounds(kind: str, agent_type: str, c: GMNConstraints, observations: int) -> tuple[int, int]:
    """(minimum, maximum) of a lean node's size (at most `LEAN_MAX_SIZE`); states and
    observations at least 2 where the constraints allow (a real-model run answered a reader
    with 1 state and 1 observation: nothing to tell apart, nothing to learn)."""
    least, most = size_bounds(kind, agent_type, c, observations)
    if kind in ("state", "observation"):
        least = max(least, min(2, most))
    return least, min(most, LEAN_MAX_SIZE)


def size_bounds(
    kind: str, agent_type: str, c: GMNConstraints, observations: int
) -> tuple[int, int]:
    """(minimum, maximum) of a variable node's size: the constraint caps it; what the agent
    type implies (GMN092/095/096) raises the floor unless the constraint rules that out."""
    _, limit_key = SIZE_LIMITS[kind]
    limit = getattr(c, limit_key)
    most = limit if limit is not None else MAX_DIMENSION
    least = 1
    if agent_type in ("explorer", "trader", "coordinator") and kind in ("state", "action"):
        least = 2
    if agent_type == "coordinator" and kind == "observation" and observations < 2:
        least = 3
    return min(least, most), most


def stated_bounds(least: int, most: int, stated: StatedSize | None) -> tuple[int, int]:
    """A slot's size bounds narrowed to what the prompt states (the statement wins over the
    agent type's floor; `stated_sizes` already dropped what the constraints rule out)."""
    if stated is None:
        return least, most
    high = most if stated.most is None else min(most, stated.most)
    low = max(least, stated.least)
    if low > high:
        low = stated.least
        high = max(low, high)
    return low, high


def _size(least: int, most: int) -> dict[str, Any]:
    """Integer bounds (llama.cpp honours them; a stated size has minimum = maximum)."""
    return {"type": "integer", "minimum": least, "maximum": most}


def _node(
    kind: str,
    ident: dict[str, Any],
    bounds: tuple[int, int] | None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "object",
        "properties": {"id": ident, "type": {"const": kind}},
        "required": ["id", "type"],
        "additionalProperties": False,
    }
    props: dict[str, Any] | None = None
    if kind in SIZE_LIMITS and bounds is not None:
        props = {SIZE_LIMITS[kind][0]: _size(*bounds)}
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


def _edge(source: dict[str, Any], target: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"source": source, "target": target, "type": {"const": kind}},
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


def layouts_for(c: GMNConstraints, layouts: list[str]) -> list[str]:
    """The suggested layouts that exist and that `max_nodes` allows, else `skeletons_for`'s
    smallest."""
    names = []
    for name in layouts:
        found = layout(name)
        if found is not None and (c.max_nodes is None or len(found[0]) <= c.max_nodes):
            names.append(name)
    return names or skeletons_for(c)[:1]


def _graph(slots: Slots, edges: Edges) -> dict[str, Any]:
    """A layout as a document without sizes (ids by slot)."""
    ids = [f"{prefix}_{i}" for i, (_, prefix) in enumerate(slots)]
    return {
        "nodes": [{"id": i, "type": kind} for i, (kind, _) in zip(ids, slots, strict=True)],
        "edges": [{"source": ids[a], "target": ids[b], "type": k} for a, b, k in edges],
    }


def unlike_examples(layouts: list[str], examples: list[dict[str, Any]]) -> list[str]:
    """The layouts whose graph is none of the shown examples' (a 0.5B model answers the
    example's graph and sizes: a copy, GMN091); all of them if that leaves none."""
    shown = []
    for doc in examples:
        bare = {
            "nodes": [{"id": n.get("id"), "type": n.get("type")} for n in doc.get("nodes", [])],
            "edges": doc.get("edges", []),
        }
        found = structure(bare)
        if found is not None:
            shown.append(found)
    kept = []
    for name in layouts:
        found_layout = layout(name)
        mine = structure(_graph(*found_layout)) if found_layout is not None else None
        if mine is None or not any(same_structure(mine, other) for other in shown):
            kept.append(name)
    return kept or layouts


def lean_json_schema(
    agent_type: str,
    constraints: GMNConstraints,
    stated: list[StatedSize] | None = None,
    layouts: list[str] | None = None,
) -> dict[str, Any]:
    """The lean decoding schema for one request: one of its skeletons, sizes within bounds.

    With `layouts` (a grounded request: `stated.suggested_layouts`), the document is one of
    those layouts, every node id is fixed per slot (`slot_id`, so edges name them by `const`
    and cannot dangle) and the first slot of each kind carries the size the prompt states;
    without, one of `SKELETONS`, ids chosen by the model under their slot's prefix."""
    key = orjson.dumps([s.model_dump() for s in stated or []]).decode()
    grounded = None if layouts is None else ",".join(layouts)
    raw = _lean_schema(agent_type, constraints.model_dump_json(), key, grounded)
    schema: dict[str, Any] = orjson.loads(raw)
    return schema


@cache
def _lean_schema(
    agent_type: str, constraints_json: str, stated_json: str, layouts: str | None
) -> bytes:
    c = GMNConstraints.model_validate_json(constraints_json)
    stated: dict[str, StatedSize] = {
        s.kind: s for s in (StatedSize.model_validate(x) for x in orjson.loads(stated_json))
    }
    names = skeletons_for(c) if layouts is None else layouts_for(c, layouts.split(","))
    documents = []
    for name in names:
        found = layout(name)
        assert found is not None
        slots, edges = found
        obs = sum(1 for kind, _ in slots if kind == "observation")
        if layouts is None:
            ids = [_id_pattern(prefix) for _, prefix in slots]
        else:
            ids = [{"const": slot_id(name, prefix, kind, agent_type)} for kind, prefix in slots]
        nodes = []
        seen: set[str] = set()
        for (kind, _), ident in zip(slots, ids, strict=True):
            bounds = _bounds(kind, agent_type, c, obs) if kind in SIZE_LIMITS else None
            if bounds is not None and kind not in seen:
                seen.add(kind)
                bounds = stated_bounds(*bounds, _stated_for(kind, stated, obs))
            nodes.append(_node(kind, ident, bounds))
        wires = [_edge(ids[s], ids[t], kind) for s, t, kind in edges]
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


def _stated_for(kind: str, stated: dict[str, StatedSize], observations: int) -> StatedSize | None:
    """What the prompt states for the first slot of a kind: its size, or for the only
    observation slot, at least one value per agent it names."""
    if kind in stated:
        return stated[kind]
    agents = stated.get("agents")
    if kind == "observation" and agents is not None and observations < agents.least:
        return StatedSize(kind="observation", least=agents.least, words=agents.words)
    return None


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
    return system_text(data.agent_type, data.constraints, keys, lean=True, stated=data.stated)


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
