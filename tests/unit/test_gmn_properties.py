"""Property tests: generated valid GMN documents validate clean; single mutations break one rule."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.gmn import GMNDocument, parse_text_form, validate_gmn, validator_benchmark_document

Doc = dict[str, Any]
FAST = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- generation of valid documents -------------------------------------------------------------


def _stochastic(rnd: random.Random, n: int) -> list[float]:
    weights = [rnd.choice([0, 0, 1, 2, 3, 5, 8]) for _ in range(n)]
    if not any(weights):
        weights[rnd.randrange(n)] = 1
    total = sum(weights)
    return [w / total for w in weights]


def likelihood_matrix(rnd: random.Random, n_obs: int, n_states: int) -> list[list[float]]:
    """A[obs][state] with every column summing to 1."""
    columns = [_stochastic(rnd, n_obs) for _ in range(n_states)]
    return [[columns[s][o] for s in range(n_states)] for o in range(n_obs)]


def transition_matrix(rnd: random.Random, n_next: int, n_states: int, n_actions: int) -> Any:
    """B[next][state][action] with every (state, action) slice summing to 1."""
    slices = {(s, a): _stochastic(rnd, n_next) for s in range(n_states) for a in range(n_actions)}
    return [
        [[slices[(s, a)][n] for a in range(n_actions)] for s in range(n_states)]
        for n in range(n_next)
    ]


@st.composite
def documents(draw: st.DrawFn, full: bool = False) -> Doc:
    """A valid document; `full` guarantees every optional feature (matrices, belief, llm...)."""
    rnd = draw(st.randoms(use_true_random=False))
    low = 2 if full else 1
    nodes: list[Doc] = []
    edges: list[Doc] = []

    def add(node_id: str, node_type: str, props: Doc | None = None) -> str:
        node: Doc = {"id": node_id, "type": node_type}
        if props is not None or draw(st.booleans()):
            node["properties"] = props or {}
        nodes.append(node)
        return node_id

    def link(source: str, target: str, edge_type: str) -> None:
        edges.append({"source": source, "target": target, "type": edge_type})

    def variable(node_type: str, prefix: str, k: int) -> Doc:
        dim_key = {"state": "num_states", "observation": "num_observations"}.get(
            node_type, "num_actions"
        )
        props: Doc = {dim_key: k}
        if draw(st.booleans()):
            props[node_type + "_names"] = [f"{prefix}_{i}" for i in range(k)]
        return props

    actions = []
    for a in range(draw(st.integers(1, 2))):
        k = draw(st.integers(low, 4))
        actions.append((add(f"act{a}", "action", variable("action", "act", k)), k))
    states = []
    for s in range(draw(st.integers(1, 3))):
        k = draw(st.integers(low, 4))
        states.append((add(f"st{s}", "state", variable("state", "st", k)), k))
    for s, (sid, ns) in enumerate(states):
        aid, na = draw(st.sampled_from(actions))
        with_b = (full and s == 0) or draw(st.booleans())
        b_props = {"matrix": transition_matrix(rnd, ns, ns, na)} if with_b else None
        tid = add(f"trans{s}", "transition", b_props)
        link(sid, tid, "depends_on")
        link(aid, tid, "depends_on")
    for a, (aid, na) in enumerate(actions):  # every action drives at least one transition
        if not any(e["source"] == aid for e in edges):
            sid, ns = states[0]
            b_props = {"matrix": transition_matrix(rnd, ns, ns, na)} if full else None
            tid = add(f"trans_act{a}", "transition", b_props)
            link(sid, tid, "depends_on")
            link(aid, tid, "depends_on")
    observations: list[str] = []
    for s, (sid, ns) in enumerate(states):
        if (full and s == 0) or draw(st.booleans()):
            link(
                add(f"prior{s}", "belief", {"distribution": _stochastic(rnd, ns)}),
                sid,
                "depends_on",
            )
        n_obs = draw(st.integers(1 if (s == 0 or full) else 0, 2))
        for o in range(n_obs):
            direct = not (full and s == 0 and o == 0) and draw(st.booleans())
            no = ns if direct else draw(st.integers(low, 4))
            oid = add(f"obs{s}_{o}", "observation", variable("observation", "obs", no))
            observations.append(oid)
            if direct:
                link(sid, oid, "generates")
            else:
                with_a = (full and o == 0) or draw(st.booleans())
                a_props = {"matrix": likelihood_matrix(rnd, no, ns)} if with_a else None
                lid = add(f"lik{s}_{o}", "likelihood", a_props)
                link(sid, lid, "depends_on")
                link(lid, oid, "generates")
            if (full and s == 0 and o == 0) or draw(st.booleans()):
                pref: Doc = {"vector": [rnd.uniform(-5, 5) for _ in range(no)]}
                if full or draw(st.booleans()):
                    pref["preferred_observation"] = rnd.randrange(no)
                link(add(f"pref{s}_{o}", "preference", pref), oid, "depends_on")
    if full or draw(st.booleans()):
        props: Doc = {"prompt_template": "Observed {obs}; what next?"}
        if draw(st.booleans()):
            props["trigger_condition"] = "on_observation"
        qid = add("ask", "llm_query", props)
        link(draw(st.sampled_from(observations)), qid, "queries")
        pid = add("plan", "policy")
        link(qid, pid, "updates")
        link(pid, draw(st.sampled_from(actions))[0], "influences")
    doc: Doc = {
        "nodes": draw(st.permutations(nodes)),
        "edges": draw(st.permutations(edges)),
    }
    if draw(st.booleans()):
        doc["name"] = draw(st.text(min_size=1, max_size=20).filter(lambda t: t.strip()))
    if draw(st.booleans()):
        doc["metadata"] = {"seed": 1, "tags": ["generated"]}
    return doc


def render_text_form(doc: Doc) -> str:
    """Render a document's nodes and edges in the SPEC §2 text form."""
    lines = ["# generated", "[nodes]"]
    for node in doc["nodes"]:
        props = node.get("properties") or {}
        block = f" {json.dumps(props)}" if props else ""
        lines.append(f"{node['id']}: {node['type']}{block}")
    lines.append("[edges]")
    lines += [f"{e['source']} -> {e['target']}: {e['type']}" for e in doc["edges"]]
    return "\n".join(lines) + "\n"


@settings(FAST, max_examples=40)
@given(documents())
def test_generated_documents_are_valid(doc: Doc) -> None:
    report = validate_gmn(doc)
    assert report.valid, [e.model_dump() for e in report.errors]
    assert validate_gmn(json.dumps(doc).encode()).valid
    GMNDocument.model_validate(doc)


@FAST
@given(documents(full=True))
def test_full_documents_are_valid_in_both_forms(doc: Doc) -> None:
    assert validate_gmn(doc).valid, validate_gmn(doc).errors
    text = render_text_form(doc)
    report = validate_gmn(text)
    assert report.valid, [e.model_dump() for e in report.errors]
    converted = parse_text_form(text)
    assert [n["id"] for n in converted["nodes"]] == [n["id"] for n in doc["nodes"]]
    assert converted["edges"] == doc["edges"]


@pytest.mark.parametrize("n_nodes", [1, 7, 50, 333])
def test_benchmark_document_is_valid(n_nodes: int) -> None:
    doc = validator_benchmark_document(n_nodes)
    assert validate_gmn(doc).valid
    assert len(doc["nodes"]) == max(n_nodes, 7)


# --- single-rule mutations ---------------------------------------------------------------------


def nodes_of(doc: Doc, *types: str) -> list[Doc]:
    return [n for n in doc["nodes"] if n["type"] in types]


def dims(doc: Doc) -> dict[str, int]:
    keys = ("num_states", "num_observations", "num_actions")
    return {
        n["id"]: v for n in doc["nodes"] for k, v in n.get("properties", {}).items() if k in keys
    }


def linked(doc: Doc, node_id: str, edge_type: str, outgoing: bool) -> list[str]:
    if outgoing:
        return [
            e["target"] for e in doc["edges"] if e["source"] == node_id and e["type"] == edge_type
        ]
    return [e["source"] for e in doc["edges"] if e["target"] == node_id and e["type"] == edge_type]


def props(node: Doc) -> Doc:
    found: Doc = node.setdefault("properties", {})
    return found


Pick = Callable[[Any], Any]  # draws from a strategy (hypothesis `data.draw`)
Mutation = Callable[[Doc, Pick], Any]
MUTATIONS: dict[str, tuple[Mutation, bool]] = {}


def mutation(code: str, exact: bool = True) -> Callable[[Mutation], Mutation]:
    def register(fn: Mutation) -> Mutation:
        MUTATIONS[code] = (fn, exact)
        return fn

    return register


@mutation("GMN001")
def _undecodable(doc: Doc, pick: Pick) -> Any:
    text = json.dumps(doc)
    return pick(
        st.sampled_from(
            [
                text + "\n}",
                '{"nodes": [], ' + text[1:],
                text[:-1] + ', "metadata": {"x": NaN}}',
                text.encode() + b"\xff",
                "[" * 70 + "]" * 70,
                "  \n\t ",
            ]
        )
    )


@mutation("GMN002")
def _bad_text_line(doc: Doc, pick: Pick) -> Any:
    bad = pick(
        st.sampled_from(["[Nodes]", "a -> b -> c: generates", "x: state {oops}", "é: state"])
    )
    return render_text_form(doc) + "[edges]\n" + bad + "\n"


@mutation("GMN003")
def _not_object(doc: Doc, pick: Pick) -> Any:
    return pick(st.sampled_from(["[" + json.dumps(doc) + "]", '"gmn"', "42", "null", "true"]))


@mutation("GMN010")
def _missing_field(doc: Doc, pick: Pick) -> Any:
    del doc[pick(st.sampled_from(["nodes", "edges"]))]
    return doc


@mutation("GMN011")
def _not_array(doc: Doc, pick: Pick) -> Any:
    doc[pick(st.sampled_from(["nodes", "edges"]))] = pick(st.sampled_from([{}, "x", 3, None]))
    return doc


@mutation("GMN012")
def _no_nodes(doc: Doc, pick: Pick) -> Any:
    doc["nodes"] = []
    return doc


@mutation("GMN013")
def _bad_name(doc: Doc, pick: Pick) -> Any:
    doc["name"] = pick(st.sampled_from(["", " \t ", "x" * 101, 5, None, ["n"]]))
    return doc


@mutation("GMN014")
def _bad_optional_field(doc: Doc, pick: Pick) -> Any:
    key = pick(st.sampled_from(["id", "description", "version", "metadata"]))
    doc[key] = pick(st.sampled_from([3, None, ["x"]] + (["text"] if key == "metadata" else [])))
    return doc


@mutation("GMN015")
def _unknown_field(doc: Doc, pick: Pick) -> Any:
    doc[pick(st.sampled_from(["title", "Nodes", "agent_type", "links"]))] = 1
    return doc


@mutation("GMN020")
def _node_not_object(doc: Doc, pick: Pick) -> Any:
    at = pick(st.integers(0, len(doc["nodes"])))
    doc["nodes"].insert(at, pick(st.sampled_from([1, "state", None, [], True])))
    return doc


@mutation("GMN021")
def _node_id_missing(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))
    if pick(st.booleans()):
        del node["id"]
    else:
        node["id"] = pick(st.sampled_from([5, None, ["a"], {"id": "a"}]))
    return doc


@mutation("GMN022")
def _bad_node_id(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))
    node["id"] = pick(st.sampled_from(["", "a-b", "2x", "état", "x\n", "a" * 65, " x"]))
    return doc


@mutation("GMN023")
def _duplicate_id(doc: Doc, pick: Pick) -> Any:
    doc["nodes"].append(copy.deepcopy(pick(st.sampled_from(doc["nodes"]))))
    return doc


@mutation("GMN024")
def _node_type_missing(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))
    if pick(st.booleans()):
        del node["type"]
    else:
        node["type"] = pick(st.sampled_from([3, None, ["state"]]))
    return doc


@mutation("GMN025")
def _unknown_node_type(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))
    node["type"] = pick(st.sampled_from(["State", "emission", "", "policy ", "LLM_QUERY"]))
    return doc


@mutation("GMN026")
def _node_properties_not_object(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))
    node[pick(st.sampled_from(["properties", "metadata"]))] = pick(
        st.sampled_from([None, [], "x", 0])
    )
    return doc


@mutation("GMN027")
def _unknown_node_key(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))
    node[pick(st.sampled_from(["name", "num_states", "label", "Properties"]))] = 4
    return doc


@mutation("GMN030")
def _edge_not_object(doc: Doc, pick: Pick) -> Any:
    at = pick(st.integers(0, len(doc["edges"])))
    doc["edges"].insert(at, pick(st.sampled_from([1, "a -> b", None, ["a", "b"]])))
    return doc


@mutation("GMN031")
def _edge_field_missing(doc: Doc, pick: Pick) -> Any:
    edge = pick(st.sampled_from(doc["edges"]))
    key = pick(st.sampled_from(["source", "target", "type"]))
    if pick(st.booleans()):
        del edge[key]
    else:
        edge[key] = pick(st.sampled_from(["", 5, None]))
    return doc


@mutation("GMN032")
def _unknown_edge_type(doc: Doc, pick: Pick) -> Any:
    pick(st.sampled_from(doc["edges"]))["type"] = pick(st.sampled_from(["Generates", "causes"]))
    return doc


@mutation("GMN033")
def _edge_properties_not_object(doc: Doc, pick: Pick) -> Any:
    pick(st.sampled_from(doc["edges"]))["properties"] = pick(st.sampled_from([None, [], 1]))
    return doc


@mutation("GMN034")
def _unknown_edge_key(doc: Doc, pick: Pick) -> Any:
    pick(st.sampled_from(doc["edges"]))[pick(st.sampled_from(["weight", "from", "label"]))] = 1
    return doc


def _variable(doc: Doc, pick: Pick) -> tuple[Doc, str]:
    node = pick(st.sampled_from(nodes_of(doc, "state", "observation", "action")))
    key = {"state": "num_states", "observation": "num_observations", "action": "num_actions"}
    return props(node), key[node["type"]]


@mutation("GMN040")
def _dimension_missing(doc: Doc, pick: Pick) -> Any:
    p, key = _variable(doc, pick)
    if pick(st.booleans()):
        del p[key]
    else:
        p[key] = None
    return doc


@mutation("GMN041")
def _dimension_not_integer(doc: Doc, pick: Pick) -> Any:
    p, key = _variable(doc, pick)
    p[key] = pick(st.sampled_from([0, -3, float(p[key]), str(p[key]), True, [p[key]]]))
    return doc


@mutation("GMN042")
def _dimension_too_big(doc: Doc, pick: Pick) -> Any:
    p, key = _variable(doc, pick)
    p[key] = pick(st.sampled_from([100_001, 10**6, 10**400]))
    return doc


@mutation("GMN043")
def _bad_names(doc: Doc, pick: Pick) -> Any:
    p, key = _variable(doc, pick)
    names_key = key.replace("num_", "").rstrip("s") + "_names"
    k = p[key]
    p[names_key] = pick(
        st.sampled_from(
            [
                [f"n{i}" for i in range(k + 1)],
                ["", *[f"n{i}" for i in range(1, k)]],
                [1, *[f"n{i}" for i in range(1, k)]],
                ["same"] * k if k > 1 else "same",
                "n0",
            ]
        )
    )
    return doc


def _array_node(doc: Doc, pick: Pick) -> tuple[Doc, str]:
    holders = [
        (n, k)
        for n in doc["nodes"]
        for k in ("matrix", "distribution", "vector")
        if k in n.get("properties", {})
    ]
    return pick(st.sampled_from(holders))  # type: ignore[no-any-return]


@mutation("GMN044")
def _malformed_array(doc: Doc, pick: Pick) -> Any:
    node, key = _array_node(doc, pick)
    value = node["properties"][key]
    choice = pick(st.integers(0, 3))
    if choice == 0:  # a non-number entry
        row = value
        while isinstance(row[0], list):
            row = row[0]
        row[0] = pick(st.sampled_from(["0.5", True, None, {}]))
    elif choice == 1:
        node["properties"][key] = []
    elif choice == 2:  # wrong rank
        node["properties"][key] = [value]
    else:  # ragged
        node["properties"][key] = [value, value[:1]] if len(value) > 1 else [value, []]
    return doc


@mutation("GMN045")
def _negative_probability(doc: Doc, pick: Pick) -> Any:
    dist = nodes_of(doc, "belief")[0]["properties"]["distribution"]
    dist[0], dist[1] = dist[0] + dist[1] + 0.25, -0.25
    return doc


@mutation("GMN046")
def _not_normalized(doc: Doc, pick: Pick) -> Any:
    node, key = _array_node(doc, pick)
    if node["type"] == "preference":
        node = nodes_of(doc, "belief")[0]
        key = "distribution"
    row = node["properties"][key]
    while isinstance(row[0], list):
        row = row[0]
    row[0] += pick(st.sampled_from([0.5, 1e-3, 2.0]))
    return doc


@mutation("GMN047")
def _bad_preferred_observation(doc: Doc, pick: Pick) -> Any:
    pref = nodes_of(doc, "preference")[0]
    props(pref)["preferred_observation"] = pick(st.sampled_from([-1, 1.0, "0", True, [0]]))
    return doc


@mutation("GMN048")
def _bad_llm_query(doc: Doc, pick: Pick) -> Any:
    p = props(nodes_of(doc, "llm_query")[0])
    key = pick(st.sampled_from(["prompt_template", "trigger_condition", "response_parser"]))
    if key == "prompt_template":
        p[key] = pick(st.sampled_from(["", "  \n", 5, None]))
    else:
        p[key] = pick(st.sampled_from([5, ["x"], {}]))
    return doc


@mutation("GMN049")
def _reserved_on_wrong_type(doc: Doc, pick: Pick) -> Any:
    key = pick(st.sampled_from(["matrix", "distribution", "vector", "preferred_observation"]))
    owners = {
        "matrix": ("likelihood", "transition"),
        "distribution": ("belief",),
        "vector": ("preference",),
        "preferred_observation": ("preference",),
    }[key]
    others = [n for n in doc["nodes"] if n["type"] not in owners]
    props(pick(st.sampled_from(others)))[key] = [[1.0]] if key == "matrix" else [1.0]
    return doc


@mutation("GMN050")
def _dangling(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))["id"]
    ghost = pick(st.sampled_from(["ghost", node + "_", node.upper(), " " + node]))
    ends = (node, ghost) if pick(st.booleans()) else (ghost, node)
    doc["edges"].append({"source": ends[0], "target": ends[1], "type": "influences"})
    return doc


@mutation("GMN051")
def _self_loop(doc: Doc, pick: Pick) -> Any:
    node = pick(st.sampled_from(doc["nodes"]))["id"]
    edge_type = pick(st.sampled_from(["influences", "depends_on", "generates"]))
    doc["edges"].append({"source": node, "target": node, "type": edge_type})
    return doc


@mutation("GMN052")
def _disallowed_edge(doc: Doc, pick: Pick) -> Any:
    state = pick(st.sampled_from(nodes_of(doc, "state")))["id"]
    action = pick(st.sampled_from(nodes_of(doc, "action")))["id"]
    edge_type = pick(st.sampled_from(["generates", "depends_on", "queries", "updates"]))
    doc["edges"].append({"source": state, "target": action, "type": edge_type})
    return doc


@mutation("GMN053", exact=False)
def _missing_required_type(doc: Doc, pick: Pick) -> Any:
    gone = {
        n["id"] for n in nodes_of(doc, pick(st.sampled_from(["state", "observation", "action"])))
    }
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] not in gone]
    doc["edges"] = [e for e in doc["edges"] if not {e["source"], e["target"]} & gone]
    return doc


@mutation("GMN054")
def _isolated(doc: Doc, pick: Pick) -> Any:
    at = pick(st.integers(0, len(doc["nodes"])))
    doc["nodes"].insert(at, {"id": "lonely", "type": pick(st.sampled_from(["policy", "state"]))})
    if doc["nodes"][at]["type"] == "state":
        doc["nodes"][at]["properties"] = {"num_states": 2}
    return doc


@mutation("GMN055")
def _cycle(doc: Doc, pick: Pick) -> Any:
    edge = pick(st.sampled_from([e for e in doc["edges"] if e["type"] == "generates"]))
    doc["edges"].append({"source": edge["target"], "target": edge["source"], "type": "influences"})
    return doc


@mutation("GMN056")
def _wrong_count(doc: Doc, pick: Pick) -> Any:
    counted = [e for e in doc["edges"] if e["type"] in ("depends_on", "generates")]
    doc["edges"].append(dict(pick(st.sampled_from(counted))))
    return doc


@mutation("GMN060")
def _likelihood_shape(doc: Doc, pick: Pick) -> Any:
    lik = next(n for n in nodes_of(doc, "likelihood") if "matrix" in n.get("properties", {}))
    n_states = dims(doc)[linked(doc, lik["id"], "depends_on", outgoing=False)[0]]
    n_obs = dims(doc)[linked(doc, lik["id"], "generates", outgoing=True)[0]]
    shape = pick(st.sampled_from([(n_obs + 1, n_states), (n_obs, n_states + 1), (n_states, n_obs)]))
    if shape == (n_obs, n_states):  # a square matrix "transposed" has the right shape
        shape = (n_obs + 1, n_states)
    lik["properties"]["matrix"] = likelihood_matrix(random.Random(0), *shape)
    return doc


@mutation("GMN061")
def _transition_shape(doc: Doc, pick: Pick) -> Any:
    trans = next(n for n in nodes_of(doc, "transition") if "matrix" in n.get("properties", {}))
    sources = linked(doc, trans["id"], "depends_on", outgoing=False)
    state = next(s for s in sources if s.startswith("st"))
    action = next(s for s in sources if s.startswith("act"))
    n_s, n_a = dims(doc)[state], dims(doc)[action]
    shape = pick(
        st.sampled_from([(n_s + 1, n_s + 1, n_a), (n_s, n_s, n_a + 1), (n_s, n_s + 1, n_a)])
    )
    trans["properties"]["matrix"] = transition_matrix(random.Random(0), *shape)
    return doc


@mutation("GMN062")
def _belief_length(doc: Doc, pick: Pick) -> Any:
    belief = nodes_of(doc, "belief")[0]
    n = len(belief["properties"]["distribution"]) + pick(st.sampled_from([-1, 1, 2]))
    belief["properties"]["distribution"] = [1.0 / n] * n
    return doc


@mutation("GMN063")
def _preference_length(doc: Doc, pick: Pick) -> Any:
    pref = next(n for n in nodes_of(doc, "preference") if "vector" in n["properties"])
    n = len(pref["properties"]["vector"]) + pick(st.sampled_from([-1, 1, 3]))
    pref["properties"]["vector"] = [0.5] * n
    return doc


@mutation("GMN064")
def _preferred_out_of_range(doc: Doc, pick: Pick) -> Any:
    pref = nodes_of(doc, "preference")[0]
    n_obs = dims(doc)[linked(doc, pref["id"], "depends_on", outgoing=True)[0]]
    props(pref)["preferred_observation"] = n_obs + pick(st.integers(0, 3))
    return doc


@mutation("GMN065")
def _direct_generates_size(doc: Doc, pick: Pick) -> Any:
    state = pick(st.sampled_from(nodes_of(doc, "state")))
    size = dims(doc)[state["id"]] + pick(st.integers(1, 3))
    doc["nodes"].append(
        {"id": "mirror", "type": "observation", "properties": {"num_observations": size}}
    )
    doc["edges"].append({"source": state["id"], "target": "mirror", "type": "generates"})
    return doc


@pytest.mark.parametrize("code", sorted(MUTATIONS))
@FAST
@given(doc=documents(full=True), data=st.data())
def test_single_mutation_breaks_its_rule(code: str, doc: Doc, data: st.DataObject) -> None:
    fn, exact = MUTATIONS[code]
    assert validate_gmn(doc).valid
    mutated = fn(copy.deepcopy(doc), data.draw)
    report = validate_gmn(mutated)
    assert not report.valid
    codes = set(report.codes)
    if exact:
        assert codes == {code}, [e.model_dump() for e in report.errors]
    else:
        assert code in codes, [e.model_dump() for e in report.errors]


def test_mutations_cover_the_spec_rule_codes() -> None:
    """Every rule code of SPEC §4 has a mutation (GMN090 is producer-level, not validator)."""
    spec_codes = {
        *(f"GMN00{i}" for i in range(1, 4)),
        *(f"GMN0{i}" for i in (10, 11, 12, 13, 14, 15)),
        *(f"GMN0{i}" for i in range(20, 28)),
        *(f"GMN0{i}" for i in range(30, 35)),
        *(f"GMN0{i}" for i in range(40, 50)),
        *(f"GMN0{i}" for i in range(50, 57)),
        *(f"GMN0{i}" for i in range(60, 66)),
    }
    assert len(spec_codes) == 45
    assert spec_codes == set(MUTATIONS)
