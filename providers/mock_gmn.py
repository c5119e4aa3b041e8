"""The mock model's GMN mode: plausible valid documents from a prompt, and named ways to fail.

First answers are made invalid at a configured rate, in one of the mock's `INVALID_KINDS`; a
refinement request (one that carries a previous answer) always gets a valid document, so the
validate-and-refine loop converges offline. Every choice is drawn from a generator seeded by
(seed, custom_id): a request gets the same answer whatever order the workers run it in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from schemas.gmn.prompts import GMNConstraints, read_system_prompt
from schemas.gmn.rounds import is_follow_up
from schemas.gmn.stated import stated_sizes
from schemas.request import LLMRequest

_DEFAULT_MAX_STATES: Final = 36
_NUMBER_WORDS: Final = {
    w: i
    for i, w in enumerate(
        [
            *("zero", "one", "two", "three", "four", "five", "six"),
            *("seven", "eight", "nine", "ten", "eleven", "twelve"),
        ]
    )
}
_GRID: Final = re.compile(r"\b(\d{1,2})\s*[x\u00d7]\s*(\d{1,2})\b")
_COUNT: Final = re.compile(r"\b(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")\b", re.I)


@dataclass
class Shape:
    """The sizes and names of one generated agent."""

    states: int
    observations: int
    actions: int
    action_names: list[str]
    state_label: str
    observation_label: str
    action_label: str
    #: Observation nodes: one per sensor the prompt names (`N sensors`).
    sensors: int = 1


def _count(prompt: str) -> int | None:
    grid = _GRID.search(prompt)
    if grid:
        return int(grid.group(1)) * int(grid.group(2))
    for match in _COUNT.finditer(prompt):
        token = match.group(1).lower()
        value = int(token) if token.isdigit() else _NUMBER_WORDS[token]
        if 2 <= value <= 12:
            return value
    return None


def _cap(value: int, limit: int | None) -> int:
    return max(1, min(value, limit or value))


def shape_for(prompt: str, agent_type: str, constraints: GMNConstraints) -> Shape:
    """Sizes read from the prompt (a "5x5 grid", "three workers"), capped by the constraints."""
    count = _count(prompt)
    c = constraints
    if agent_type == "explorer":
        states, obs = count or 4, count or 4
        actions = ["north", "south", "east", "west", "stay"]
        labels = ("position", "seen_position", "move")
    elif agent_type == "trader":
        states, obs = 3, 3
        actions = ["buy", "sell", "hold"]
        labels = ("market_regime", "pnl_signal", "order")
    elif agent_type == "coordinator":
        workers = min(count or 3, 8)
        states, obs = 3, 3
        actions = [f"assign_w{i + 1}" for i in range(workers)] + ["wait"]
        labels = ("task_phase", "worker_report", "assign")
    else:
        states, obs = count or 3, min(count or 3, 3)
        actions = ["act", "wait", "observe"]
        labels = ("situation", "signal", "choice")
    states = _cap(min(states, _DEFAULT_MAX_STATES), c.max_states)
    obs = _cap(min(obs, _DEFAULT_MAX_STATES), c.max_observations)
    n_actions = _cap(len(actions), c.max_actions)
    sensors = 1
    for size in stated_sizes(prompt, c):  # what the prompt states wins (GMN097/098)
        if size.kind == "state":
            states = size.least
        elif size.kind == "observation":
            obs = size.least
        elif size.kind == "action":
            n_actions = size.least
        elif size.kind == "agents":
            obs = max(obs, size.least)
        else:
            sensors = size.least
    names = (actions + [f"{labels[2]}_{i}" for i in range(len(actions), n_actions)])[:n_actions]
    return Shape(
        states=states,
        observations=obs,
        actions=n_actions,
        action_names=names,
        state_label=labels[0],
        observation_label=labels[1],
        action_label=labels[2],
        sensors=sensors,
    )


def _likelihood(n_obs: int, n_states: int) -> list[list[float]]:
    """A[obs][state]: mostly the matching observation; each column sums to 1 exactly enough."""
    if n_obs == 1:
        return [[1.0] * n_states]
    off = round(0.1 / (n_obs - 1), 4)
    diag = 1.0 - off * (n_obs - 1)
    return [[diag if o == s % n_obs else off for s in range(n_states)] for o in range(n_obs)]


def _transition(n_states: int, n_actions: int) -> list[list[list[int]]]:
    """B[next][state][action]: action a moves state s to (s + a) mod n, deterministically."""
    return [
        [[1 if nxt == (s + a) % n_states else 0 for a in range(n_actions)] for s in range(n_states)]
        for nxt in range(n_states)
    ]


def build_document(
    prompt: str, agent_type: str, constraints: GMNConstraints, rng: random.Random
) -> dict[str, Any]:
    """A valid GMN document sized from the prompt, within every constraint it can meet."""
    shape = shape_for(prompt, agent_type, constraints)
    s, o, a = shape.state_label, shape.observation_label, shape.action_label
    wants_llm = re.search(r"\b(language model|llm)\b", prompt, re.I) is not None
    optional = ["likelihood", "transition", "preference", "belief", "policy", "llm_query"]
    if agent_type != "general":  # what the agent type needs comes first (schemas.gmn.grounding)
        optional = ["transition", "preference", "likelihood", "belief", "policy", "llm_query"]
    if constraints.require_preferences:
        optional.remove("preference")
        optional.insert(0, "preference")
    if not wants_llm:
        optional.remove("llm_query")
    if agent_type != "coordinator" and not wants_llm:
        optional.remove("policy")
    room = (constraints.max_nodes or 99) - 3
    kept = set(optional[: max(0, room)])
    if "llm_query" in kept and "policy" not in kept:
        kept.discard("llm_query")
    if "likelihood" not in kept:  # state -> observation directly: both sizes must match
        shape.states = shape.observations = min(shape.states, shape.observations)
    n_s, n_o, n_a = shape.states, shape.observations, shape.actions
    preferred = rng.randrange(n_o)
    nodes: list[dict[str, Any]] = [
        {"id": s, "type": "state", "properties": {"num_states": n_s}},
        {"id": o, "type": "observation", "properties": {"num_observations": n_o}},
        {
            "id": a,
            "type": "action",
            "properties": {"num_actions": n_a, "action_names": shape.action_names},
        },
    ]
    edges: list[dict[str, Any]] = []

    def add(
        node_id: str, kind: str, props: dict[str, Any] | None, *links: tuple[str, str, str]
    ) -> None:
        node: dict[str, Any] = {"id": node_id, "type": kind}
        if props is not None:
            node["properties"] = props
        nodes.append(node)
        edges.extend({"source": x, "target": y, "type": t} for x, y, t in links)

    if "likelihood" in kept:
        add(
            f"{o}_model",
            "likelihood",
            {"matrix": _likelihood(n_o, n_s)},
            (s, f"{o}_model", "depends_on"),
            (f"{o}_model", o, "generates"),
        )
    else:
        edges.append({"source": s, "target": o, "type": "generates"})
    for k in range(2, shape.sensors + 1 if "likelihood" in kept else 1):
        add(f"{o}{k}", "observation", {"num_observations": n_o})
        add(
            f"{o}{k}_model",
            "likelihood",
            {"matrix": _likelihood(n_o, n_s)},
            (s, f"{o}{k}_model", "depends_on"),
            (f"{o}{k}_model", f"{o}{k}", "generates"),
        )
    if "transition" in kept:
        add(
            f"{s}_dynamics",
            "transition",
            {"matrix": _transition(n_s, n_a)},
            (s, f"{s}_dynamics", "depends_on"),
            (a, f"{s}_dynamics", "depends_on"),
        )
    if "belief" in kept:
        add(
            f"{s}_prior",
            "belief",
            {"distribution": [1.0 / n_s] * n_s},
            (f"{s}_prior", s, "depends_on"),
        )
    if "preference" in kept:
        vector = [2.0 if i == preferred else 0.0 for i in range(n_o)]
        add(
            "goal",
            "preference",
            {"vector": vector, "preferred_observation": preferred},
            ("goal", o, "depends_on"),
        )
    if "policy" in kept:
        add("plan", "policy", None, ("plan", a, "influences"))
    if "llm_query" in kept:
        template = "The agent observed {observation}. Which action should it take next?"
        add(
            "advisor",
            "llm_query",
            {"prompt_template": template, "trigger_condition": "on_ambiguous_observation"},
            (o, "advisor", "queries"),
            ("advisor", "plan", "updates"),
        )
    if "transition" not in kept and "policy" not in kept:
        edges.append({"source": a, "target": s, "type": "influences"})
    words = re.findall(r"[a-z]+", prompt.lower())[:4]
    return {
        "name": "_".join([agent_type, *words])[:100],
        "description": prompt[:200],
        "nodes": nodes,
        "edges": edges,
    }


def _node(doc: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((n for n in doc["nodes"] if n["type"] == kind), None)


def corrupt(doc: dict[str, Any], kind: str, rng: random.Random) -> str:
    """The reply text of an answer broken in the named way (a valid document goes in)."""
    likelihood, state = _node(doc, "likelihood"), _node(doc, "state")
    if kind == "unnormalized_likelihood" and likelihood is not None:
        likelihood["properties"]["matrix"][0][0] += 0.25
    elif kind == "missing_action":
        gone = {n["id"] for n in doc["nodes"] if n["type"] == "action"}
        doc["nodes"] = [n for n in doc["nodes"] if n["id"] not in gone]
        doc["edges"] = [e for e in doc["edges"] if not {e["source"], e["target"]} & gone]
    elif kind == "trailing_comma":
        return orjson.dumps(doc).decode()[:-2] + ",]}"
    elif kind == "prose_only":
        return (
            "I would model this agent with one hidden state for where it is, a noisy sensor, "
            "and a handful of actions; preferences would favour the goal outcome."
        )
    elif kind == "cycle" and state is not None:
        out = next(e for e in doc["edges"] if e["source"] == state["id"])
        doc["edges"].append({"source": out["target"], "target": state["id"], "type": "influences"})
    elif kind == "unknown_node_type":
        (likelihood or doc["nodes"][-1])["type"] = "emission"
    elif kind == "flat_properties" and state is not None:
        state["num_states"] = state.pop("properties")["num_states"]
    elif kind == "wrong_belief_length" and state is not None:
        n = state["properties"]["num_states"] + 1
        doc["nodes"].append(
            {"id": "extra_prior", "type": "belief", "properties": {"distribution": [1.0 / n] * n}}
        )
        doc["edges"].append({"source": "extra_prior", "target": state["id"], "type": "depends_on"})
    elif kind == "isolated_node":
        doc["nodes"].append({"id": "unused_plan", "type": "policy"})
    elif kind == "truncated":
        text = orjson.dumps(doc).decode()
        return text[: max(1, int(len(text) * rng.uniform(0.3, 0.9)))]
    else:  # "dangling_edge", and the fallback when a kind does not apply to this document
        doc["edges"][0]["target"] = "missing_node"
    return orjson.dumps(doc).decode()


def render(doc: dict[str, Any], rng: random.Random) -> str:
    """A valid answer as a model would write it: bare JSON, sometimes fenced after a preface."""
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    if rng.random() < 0.2:
        return f"Here is the GMN document:\n```json\n{text}\n```"
    return text


@dataclass
class GMNMock:
    """Answers GMN requests: a valid document, or (first answers only) a broken one."""

    invalid_rate: float
    kinds: tuple[str, ...]
    seed: int | None

    def answer(self, request: LLMRequest, rng: random.Random) -> str:
        """The reply to one request; `rng` is used only when no seed was configured."""
        if self.seed is not None:
            rng = random.Random(f"gmn:{self.seed}:{request.custom_id}")
        system = "\n".join(m.text for m in request.messages if m.role == "system")
        agent_type, constraints = read_system_prompt(system)
        prompt = next((m.text for m in request.messages if m.role == "user"), "")
        refinement = is_follow_up([(m.role, m.text) for m in request.messages])
        doc = build_document(prompt, agent_type, constraints, rng)
        broken = rng.random() < self.invalid_rate
        if not refinement and broken and self.kinds:
            return corrupt(doc, rng.choice(self.kinds), rng)
        return render(doc, rng)
