"""Sizes a prompt states, and the check that a document keeps them (GMN097, GMN098).

A document can follow every SPEC rule and every constraint and still ignore the request: a
"5x5 grid" answered with 5 states, a thermostat that "chooses to heat, cool or idle" with 2
actions. The prompt says these numbers in words; `stated_sizes` reads the few forms that say
them unambiguously, and nothing else (a prompt that states no size gets no check):

* a grid, `5x5` / `4 by 4 grid` -> the states (its positions; two state factors whose sizes
  multiply to it count too);
* a number and a counted noun, `five food patches`, `four corridor segments` -> the states;
  `four directions` -> the actions (one more for "stay" is allowed); `three workers` -> the
  agents a coordinator hears (that many observation nodes, or one with at least that many
  values); `two sensors` -> at least that many observation nodes;
* a list after a cue, `chooses to heat, cool or idle` / `either wait or act` -> the actions,
  `senses whether the room is cold, comfortable or hot` -> the observations, `switches between
  bear, calm and bull regimes` / `holds cash, a small or a large position` -> the states;
  `a binary sensor` -> an observation with 2 values.

The request's constraints win: a stated size beyond a `max_*` is dropped (GMN090 already
holds the document to the cap). The first statement of a kind wins (grid, then counted nouns,
then lists), so the check and the decoding schema (`lean.py`: the first slot of that kind)
agree on one number per kind.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._common import SIZE_LIMITS, int_property, nodes_of
from .model import GMNError

if TYPE_CHECKING:
    from .prompts import GMNConstraints

#: `state`/`observation`/`action`: the size of one node of that type (or, for states, the
#: product of the state factors); `agents`: observation nodes, or values of one, heard from
#: that many agents; `sensors`: observation nodes.
StatedKind = Literal["state", "observation", "action", "agents", "sensors"]
SIZE_CODE: Final = "GMN097"
COUNT_CODE: Final = "GMN098"
_PROP: Final[dict[str, str]] = {kind: prop for kind, (prop, _) in SIZE_LIMITS.items()}
_CAP: Final[dict[str, str]] = {
    **{kind: cap for kind, (_, cap) in SIZE_LIMITS.items()},
    "agents": "max_observations",
    "sensors": "max_nodes",
}
_WHAT: Final[dict[str, str]] = {
    "state": "states",
    "observation": "observations",
    "action": "actions",
}


class StatedSize(BaseModel):
    """One size the prompt states: which kind, the range it allows, and the words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: StatedKind
    least: int = Field(ge=1)
    #: None: no upper bound (agents, sensors).
    most: int | None = Field(default=None, ge=1)
    #: The prompt's words, quoted in feedback ("a 5x5 grid").
    words: str

    def allows(self, value: int) -> bool:
        """Whether one size is within what the prompt says."""
        return value >= self.least and (self.most is None or value <= self.most)

    def expected(self) -> str:
        """The number the prompt asks for, as feedback words ("25", "4 or 5", "at least 3")."""
        if self.most is None:
            return f"at least {self.least}"
        if self.most == self.least:
            return str(self.least)
        return (
            f"{self.least} or {self.most}"
            if self.most == self.least + 1
            else (f"{self.least} to {self.most}")
        )


# --- reading the prompt -----------------------------------------------------------------------

_NUMBER_WORDS: Final[dict[str, int]] = {
    w: i
    for i, w in enumerate(
        (
            *("zero", "one", "two", "three", "four", "five", "six"),
            *("seven", "eight", "nine", "ten", "eleven", "twelve"),
        )
    )
    if i >= 1
}
_NUMBER: Final = r"(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")"
_AREA: Final = r"(?:grid|world|board|maze|map|field|area|room)\b"
_GRID: Final = re.compile(
    rf"\b(\d{{1,2}})\s*[x\u00d7]\s*(\d{{1,2}})\b(?:\s+{_AREA})?|"
    rf"\b(\d{{1,2}})\s+by\s+(\d{{1,2}})\s+{_AREA}",
    re.I,
)
#: Counted nouns (plural) -> kind.
_NOUNS: Final[dict[str, StatedKind]] = {
    **dict.fromkeys(
        (
            *("cells", "squares", "rooms", "locations", "positions", "patches", "segments"),
            *("sectors", "zones", "areas", "tiles", "floors", "lanes", "regions", "levels"),
            *("regimes", "phases", "modes", "stages", "spots", "sites", "doors", "places"),
        ),
        "state",
    ),
    **dict.fromkeys(
        (
            *("workers", "agents", "people", "persons", "robots", "drones", "members"),
            *("employees", "vehicles", "trucks", "players", "teammates", "bots", "couriers"),
        ),
        "agents",
    ),
    **dict.fromkeys(("directions", "actions", "moves", "options", "choices", "arms"), "action"),
    **dict.fromkeys(("readings", "outcomes", "colours", "colors"), "observation"),
    **dict.fromkeys(("sensors", "cameras", "modalities", "channels"), "sensors"),
}
_COUNTED: Final = re.compile(
    rf"\b{_NUMBER}\s+(?:[a-z][a-z-]*\s+){{0,2}}?({'|'.join(_NOUNS)})\b", re.I
)
_BINARY: Final = re.compile(r"\b(binary|yes/no|on/off)\s+(sensor|signal|reading|observation)", re.I)
#: A word of a list item (items are 1-4 words; `or`/`and` separate them).
_WORD: Final = r"(?!(?:or|and)\b)[a-z][a-z'-]*"
_ITEM: Final = rf"{_WORD}(?:\s+{_WORD}){{0,3}}"
_LIST: Final = re.compile(
    rf"(?P<first>{_ITEM})(?P<middle>(?:,\s+{_ITEM})*)(?:,?\s+(?P<last>or|and)\s+{_ITEM})", re.I
)
#: (cue, kind, whether a two-item "A or B" list counts). The list starts where the cue ends.
_CUES: Final[tuple[tuple[re.Pattern[str], StatedKind, bool], ...]] = (
    (re.compile(r"\b(?:whether|when)\s+to\s+", re.I), "action", True),
    (re.compile(r"\beither\s+", re.I), "action", True),
    (
        re.compile(r"\b(?:decides?|chooses?|deciding|choosing)\s+(?:[a-z]+\s+){0,3}?to\s+", re.I),
        "action",
        True,
    ),
    (re.compile(r"\broutes\s+(?:[a-z]+\s+){0,3}?to\s+", re.I), "action", False),
    (re.compile(r"\b(?:and|then|can|may)\s+(?=[a-z]+s,\s)", re.I), "action", False),
    (
        re.compile(
            r"\b(?:senses?|observes?|sees?|hears?|reads?|watches|watch|detects?|notices?)\s+"
            r"whether\s+(?:[a-z]+\s+){0,4}?(?:is|are)\s+(?:[a-z]+ing\s+)?",
            re.I,
        ),
        "observation",
        False,
    ),
    (re.compile(r"\b(?:switch(?:es)?|alternates?)\s+between\s+", re.I), "state", False),
    (re.compile(r"\bholds\s+", re.I), "state", False),
)


def _number(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS[token.lower()]


def _grids(prompt: str) -> list[StatedSize]:
    found = []
    for m in _GRID.finditer(prompt):
        a, b = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        n = int(a) * int(b)
        if n >= 1:
            found.append(StatedSize(kind="state", least=n, most=n, words=m.group(0)))
    return found


def _counted(prompt: str) -> list[StatedSize]:
    found = []
    for m in _COUNTED.finditer(prompt):
        n, noun = _number(m.group(1)), m.group(2).lower()
        kind = _NOUNS[noun]
        if n < 1 or n > 100:
            continue
        if kind == "sensors" and n < 2:
            continue  # "one sensor": every document has an observation
        most: int | None = n
        if kind in ("agents", "sensors"):
            most = None
        elif noun == "directions":
            most = n + 1  # and "stay"
        found.append(StatedSize(kind=kind, least=n, most=most, words=m.group(0)))
    for m in _BINARY.finditer(prompt):
        found.append(StatedSize(kind="observation", least=2, most=2, words=m.group(0)))
    return found


def _lists(prompt: str) -> list[StatedSize]:
    found: list[tuple[int, StatedSize]] = []
    taken: set[int] = set()
    for cue, kind, pairs in _CUES:
        for m in cue.finditer(prompt):
            start = m.end()
            if start in taken:
                continue
            listed = _LIST.match(prompt, start)
            if listed is None:
                continue
            commas = listed.group("middle").count(",")
            if commas == 0 and not (pairs and listed.group("last").lower() == "or"):
                continue
            n = commas + 2
            taken.add(start)
            words = f"{prompt[m.start() : start]}{listed.group(0)}".strip()
            found.append((m.start(), StatedSize(kind=kind, least=n, most=n, words=words)))
    return [size for _, size in sorted(found, key=lambda pair: pair[0])]


def _ruled_out(size: StatedSize, cap: int) -> bool:
    """Whether a constraint makes a stated size impossible (the constraint wins)."""
    if size.kind == "sensors":  # max_nodes: no room for a likelihood and observation each
        return cap < 3 + 2 * size.least
    return size.least > cap


def stated_sizes(prompt: str, constraints: GMNConstraints | None = None) -> list[StatedSize]:
    """The sizes `prompt` states, one per kind (grids first, then counted nouns, then lists),
    without those the constraints rule out."""
    limits: dict[str, Any] = constraints.model_dump() if constraints is not None else {}
    chosen: dict[str, StatedSize] = {}
    for size in (*_grids(prompt), *_counted(prompt), *_lists(prompt)):
        if size.kind in chosen:
            continue
        cap = limits.get(_CAP[size.kind])
        if cap is not None and _ruled_out(size, cap):
            continue
        chosen[size.kind] = size
    return list(chosen.values())


_LLM: Final = re.compile(r"\b(language model|llm|chatbot|ask\w* \w+ for advice)\b", re.I)
_SENSING: Final = re.compile(
    r"\b(tracks|reads|watches|hears|sees|senses|monitors|measures|listens|receives)\b", re.I
)
#: A second thing the agent keeps track of beside its position or the market.
_RESOURCE: Final[dict[str, re.Pattern[str]]] = {
    "explorer": re.compile(r"\b(energy|battery|fuel|hunger|food runs out)\b", re.I),
    "trader": re.compile(r"\b(inventory|cash|position|holdings?|budget)\b", re.I),
}
#: A goal or plan above the moves.
_GOAL: Final = re.compile(r"\b(goals?|learn\w*|layout|plan\w*|sectors?|schedul\w*)\b", re.I)
#: Layouts an agent type suggests when the prompt suggests none.
_DEFAULT_LAYOUTS: Final[dict[str, tuple[str, ...]]] = {
    "explorer": ("belief", "core"),
    "trader": ("core", "two_factor"),
    "coordinator": ("hierarchical", "belief"),
    "general": ("core", "belief"),
}
#: Most agents a `team` layout gives an observation node each.
MAX_TEAM: Final = 4


def suggested_layouts(prompt: str, agent_type: str, stated: list[StatedSize]) -> list[str]:
    """Lean layouts (`lean.layout`) that fit what the prompt describes, best first: an LLM it
    asks, the agents it hears, two things it senses, a resource beside its position, a goal or
    plan above its moves; else what the agent type suggests."""
    kinds = {s.kind: s for s in stated}
    names: list[str] = []
    if _LLM.search(prompt):
        names.append("llm_advice")
    agents = kinds.get("agents")
    if agents is not None and 2 <= agents.least <= MAX_TEAM:
        names.append(f"team{agents.least}")
    sensors = kinds.get("sensors")
    if (sensors is not None and sensors.least >= 2) or len(
        {m.group(1).lower() for m in _SENSING.finditer(prompt)}
    ) >= 2:
        names.append("two_sensors")
    resource = _RESOURCE.get(agent_type)
    if resource is not None and resource.search(prompt):
        names.append("two_factor")
    if agent_type in ("explorer", "coordinator") and _GOAL.search(prompt):
        names.append("hierarchical")
    return names or list(_DEFAULT_LAYOUTS.get(agent_type, ("core",)))


def stated_lines(stated: list[StatedSize]) -> list[str]:
    """The system prompt's lines naming the sizes the description states."""
    lines = []
    for size in stated:
        if size.kind in _PROP:
            lines.append(
                f"- {size.words!r}: {_a(size.kind)} node with {_PROP[size.kind]} {size.expected()}"
            )
        elif size.kind == "agents":
            lines.append(
                f"- {size.words!r}: one observation node per agent, or one with "
                f"{size.expected()} values"
            )
        else:
            lines.append(f"- {size.words!r}: {size.expected()} observation nodes")
    return lines


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


# --- checking a document ----------------------------------------------------------------------


def _sizes(doc: dict[str, Any], kind: str) -> list[tuple[int, str | None, int]]:
    """(index, id, size) of the nodes of a type whose size is an integer."""
    found = []
    for i, node in nodes_of(doc, kind):
        value = int_property(node, _PROP[kind])
        if value is not None:
            node_id = node.get("id")
            found.append((i, node_id if isinstance(node_id, str) else None, value))
    return found


def _size_error(doc: dict[str, Any], size: StatedSize) -> GMNError | None:
    nodes = _sizes(doc, size.kind)
    if not nodes:
        return None  # no node of that type: GMN053/GMN040 say so
    values = [value for _, _, value in nodes]
    if any(size.allows(v) for v in values):
        return None
    if size.kind == "state" and len(values) >= 2 and size.allows(math.prod(values)):
        return None  # state factors: 5 x 5 positions
    i, node_id, value = nodes[0]
    prop = _PROP[size.kind]
    message = (
        f"the prompt says {size.words!r}: {_a(size.kind)} node needs {prop} {size.expected()} "
        f"(this one has {value})"
    )
    return GMNError(
        code=SIZE_CODE, path=f"$.nodes[{i}].properties.{prop}", node=node_id, message=message
    )


def _count_error(doc: dict[str, Any], size: StatedSize) -> GMNError | None:
    observations = _sizes(doc, "observation")
    if not observations or len(observations) >= size.least:
        return None
    if size.kind == "agents" and any(v >= size.least for _, _, v in observations):
        return None
    if size.kind == "agents":
        message = (
            f"the prompt says {size.words!r}: hear each agent with its own observation node "
            f"({size.least}), or give one observation node at least {size.least} values "
            f"(this document has {len(observations)}, largest {max(v for _, _, v in observations)})"
        )
    else:
        message = (
            f"the prompt says {size.words!r}: give {size.least} observation nodes, one per "
            f"sensor (this document has {len(observations)})"
        )
    return GMNError(code=COUNT_CODE, path="$.nodes", message=message)


def check_stated(document: Any, stated: list[StatedSize]) -> list[GMNError]:
    """GMN097 for a size other than the one the prompt states, GMN098 for fewer observation
    nodes (or values) than the agents or sensors it names; nothing when it states none."""
    if not stated or not isinstance(document, dict):
        return []
    if not isinstance(document.get("nodes"), list):
        return []
    errors = []
    for size in stated:
        error = _size_error(document, size) if size.kind in _PROP else _count_error(document, size)
        if error is not None:
            errors.append(error)
    return errors


def grounded(document: Any, stated: list[StatedSize]) -> bool | None:
    """Whether a document keeps every size the prompt states (True when it states none);
    None without a document."""
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        return None
    return not check_stated(document, stated)
