"""GMN generation requests (SPEC §7): prompt lines, the prompts sent to a model, constraints."""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.batch_lines import LineError, json_object
from schemas.request import CustomId, LLMRequest, Message
from schemas.result import Usage

from ._common import SIZE_LIMITS
from .examples import ExampleChoice, example_block, examples_for
from .feedback import group_errors, render_groups
from .model import GMNError
from .stated import StatedSize, stated_lines

AgentType = Literal["explorer", "trader", "coordinator", "general"]
#: What a document must hold: `full` (SPEC §1 with matrices), `lean` (sizes and graph
#: only, under a skeleton schema where the endpoint decodes under one: `lean.py`), or `auto`
#: (full, and lean from the round after a cut-off or any fault but a copy: `simplify`).
Profile = Literal["full", "lean", "auto"]
PROFILES: Final[tuple[str, ...]] = ("full", "lean", "auto")
AGENT_TYPES: Final[tuple[str, ...]] = ("explorer", "trader", "coordinator", "general")
MIN_PROMPT_CHARS: Final = 10
MAX_PROMPT_CHARS: Final = 2000
MIN_PROMPT_WORDS: Final = 3
#: The refinement message lists at most this many errors; the rest are counted.
MAX_LISTED_ERRORS: Final = 40
DEFAULT_TEMPERATURE: Final = 0.2


class GMNConstraints(BaseModel):
    """Limits a generated document must respect; a breach is reported as GMN090."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_states: int | None = Field(default=None, ge=1)
    max_observations: int | None = Field(default=None, ge=1)
    max_actions: int | None = Field(default=None, ge=1)
    max_nodes: int | None = Field(default=None, ge=1)
    require_preferences: bool = False


class GMNPrompt(BaseModel):
    """One line of a prompts file: what to model, for which agent type, under which limits."""

    model_config = ConfigDict(extra="forbid")

    custom_id: CustomId
    prompt: str
    agent_type: AgentType = "general"
    constraints: GMNConstraints = Field(default_factory=GMNConstraints)

    @field_validator("prompt")
    @classmethod
    def _acceptable(cls, value: str) -> str:
        return check_prompt(value)

    @field_validator("constraints", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


def check_prompt(value: str) -> str:
    """Trim a prompt, or say which SPEC §7 acceptance rule it breaks before anything is queued.

    Messages read after the field name: "prompt: must have at least 3 words (got 1)".
    """
    trimmed = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if not trimmed:
        raise ValueError("must not be only whitespace")
    words = len(trimmed.split())
    if words < MIN_PROMPT_WORDS:
        raise ValueError(f"must have at least {MIN_PROMPT_WORDS} words (got {words})")
    if len(trimmed) < MIN_PROMPT_CHARS:
        raise ValueError(
            f"must be at least {MIN_PROMPT_CHARS} characters long (got {len(trimmed)})"
        )
    if len(trimmed) > MAX_PROMPT_CHARS:
        raise ValueError(f"must be at most {MAX_PROMPT_CHARS} characters long (got {len(trimmed)})")
    return trimmed


def parse_prompt_line(item: Any, line: int) -> GMNPrompt:
    """Read one prompts-file line (bytes, text or dict), or raise `LineError` naming the field."""
    if isinstance(item, GMNPrompt):
        return item
    obj = json_object(item, line)
    cid = obj.get("custom_id") if isinstance(obj.get("custom_id"), str) else None
    fields = {"custom_id": f"line-{line}", **obj}
    try:
        return GMNPrompt.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            known = GMNConstraints if field and field.startswith("constraints.") else GMNPrompt
            message = f"unknown field (known: {', '.join(known.model_fields)})"
        elif first["type"] == "literal_error" and field == "agent_type":
            message = f"must be one of {', '.join(AGENT_TYPES)}, got {first['input']!r}"
        raise LineError(line, field, message, cid) from None


class RoundVerdict(BaseModel):
    """What one round's answer got; kept per job so reports can show validity per round."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=1)
    valid: bool
    codes: list[str] = Field(default_factory=list)
    #: How this round's request was made (`strategy.STRATEGIES`); None in old records.
    strategy: str | None = None


class GMNTaskData(BaseModel):
    """`Task.data` of a GMN job: set by the producer, then carried and extended each round."""

    model_config = ConfigDict(extra="forbid")

    agent_type: AgentType = "general"
    constraints: GMNConstraints = Field(default_factory=GMNConstraints)
    #: A change request sent with refinement rounds (`refine_gmn(..., feedback=...)`).
    feedback: str | None = None
    #: Token usage of every round so far, including the one being reviewed.
    usage: Usage = Field(default_factory=Usage)
    #: USD of every round so far whose endpoint has a price; None while none had one.
    cost_usd: float | None = None
    history: list[RoundVerdict] = Field(default_factory=list)
    #: Complete examples the prompt showed (keys of `examples.EXAMPLES`): copies are GMN091.
    examples: list[str] = Field(default_factory=lambda: ["explorer"])
    #: `lean`: the prompt asks for sizes and graph only, and the decoding schema is a skeleton.
    profile: Profile = "full"
    #: The examples are no longer shown (the model copied one: `no_example` rounds); a copy
    #: of them is still GMN091.
    hidden_examples: bool = False
    #: The smallest context window of the route's endpoints, when configured.
    context_tokens: int | None = Field(default=None, ge=1)
    #: Length of the user's own prompt in the user turn, so notes added to it can be dropped.
    prompt_chars: int | None = Field(default=None, ge=0)
    #: Strategy of the round being answered; the reviewer sets the next one.
    strategy: str = "first"
    #: Sizes the prompt states (`stated.stated_sizes`): checked (GMN097/098) and, in the
    #: lean schema, decoded as the first slot of their kind.
    stated: list[StatedSize] = Field(default_factory=list)
    #: Lean layouts the prompt suggests (`stated.suggested_layouts`); None: the classic
    #: skeletons with ids chosen by the model (jobs queued before grounding).
    layouts: list[str] | None = None


class GMNRecord(BaseModel):
    """`LLMResult.extra["gmn"]` of a finished GMN job: the verdict output lines are built from."""

    document: dict[str, Any] | None = None
    valid: bool
    errors: list[GMNError] = Field(default_factory=list)
    rounds: int = Field(ge=0)
    agent_type: str | None = None
    #: The profile asked for (`full`, `lean`); None for lines rejected before a request.
    profile: str | None = None
    #: Summed over every round: input_tokens, output_tokens, total_tokens.
    tokens: dict[str, int] = Field(default_factory=lambda: token_counts(Usage()))
    cost_usd: float | None = None
    history: list[RoundVerdict] = Field(default_factory=list)
    #: Whether the document keeps the sizes the prompt states (True when it states none,
    #: `stated.grounded`); None without a document or in records made before the check.
    grounded: bool | None = None


def token_counts(usage: Usage) -> dict[str, int]:
    """The `tokens` field of records and output lines."""
    total = usage.input_tokens + usage.output_tokens
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": total,
    }


# --- the prompts ------------------------------------------------------------------------------

_HINTS: Final[dict[str, str]] = {
    "explorer": "positions or locations as states, movement actions, and preferences for goals"
    " or for seeing something new (curiosity).",
    "trader": "holdings or the market regime as states, buy/sell/hold actions, and preferences"
    " for observing profit over loss.",
    "coordinator": "task or team progress as states, assignment and communication actions,"
    " and preferences for tasks being completed.",
    "general": "the few states, observations and actions the description needs, and"
    " preferences for the outcomes it asks for.",
}

_RULES: Final = """\
You write GMN (Generative Model Notation) documents: a discrete active-inference agent as a \
directed acyclic graph. A document is one JSON object {"name", "nodes": [...], "edges": [...]}.
Node: {"id", "type", "properties"}; ids match ^[A-Za-z_][A-Za-z0-9_]*$ and are unique.
Node types and properties (* = required):
- state: *num_states (integer >= 1), state_names
- observation: *num_observations, observation_names
- action: *num_actions, action_names
- likelihood (A): matrix indexed A[observation][state]; every column sums to 1
- transition (B): matrix indexed B[next_state][state][action]; for each (state, action) the \
entries over next_state sum to 1
- belief (D): distribution over the states of its state, sums to 1
- preference (C): vector of log-preferences over its observation; preferred_observation index
- policy: no properties; llm_query: *prompt_template (non-blank string)
Edge: {"source", "target", "type"}; allowed (source type -> target type):
- generates: state -> observation, likelihood -> observation
- depends_on: state -> likelihood, state -> transition, action -> transition, belief -> state, \
preference -> observation
- queries: any type except llm_query -> llm_query; updates: llm_query -> any type except \
llm_query; influences: any -> any
Each likelihood has one incoming depends_on from its state and one outgoing generates to its \
observation; each transition has one depends_on from a state and one from an action; each \
belief and preference has one outgoing depends_on. Every node is on at least one edge. Include \
at least one state, one observation and one action. No cycles: no edge from a transition back \
to its state, and no llm_query updating anything upstream of what it queries. Probabilities are \
finite, >= 0, and sum to 1 within 1e-6.
"""

ANSWER_INSTRUCTION: Final = (
    "Answer with exactly one JSON object that follows these rules. "
    "No prose, no comments, no markdown fences."
)
_AGENT_LINE: Final = re.compile(r"^Agent type: (\w+)", re.M)
_CONSTRAINT_LINE: Final = re.compile(r"^- (max_\w+|require_preferences): (\d+|true|false)\b", re.M)
_CONSTRAINT_TEXT: Final[dict[str, str]] = {
    "max_states": "no state node may have more than {} states",
    "max_observations": "no observation node may have more than {} observations",
    "max_actions": "no action node may have more than {} actions",
    "max_nodes": "the document may have at most {} nodes",
}


def system_prompt(
    agent_type: str,
    constraints: GMNConstraints,
    example: ExampleChoice = "explorer",
    profile: Profile = "full",
    stated: list[StatedSize] | None = None,
) -> str:
    """The rules, an example (SPEC §7; see `examples_for`), the agent-type hint, constraints,
    the sizes the description states; the lean profile's rules ask for sizes and graph only
    (`lean.LEAN_RULES`)."""
    lean = profile == "lean"
    keys = examples_for(agent_type, example, lean)
    return system_text(agent_type, constraints, keys, lean, stated)


def system_text(
    agent_type: str,
    constraints: GMNConstraints,
    keys: list[str],
    lean: bool,
    stated: list[StatedSize] | None = None,
) -> str:
    """`system_prompt` for the examples `keys` (`examples.examples_for`), naming the sizes the
    description states."""
    rules = _RULES
    if lean:
        from . import lean as lean_profile

        rules = lean_profile.LEAN_RULES
    block = example_block(keys, lean)
    lines = [rules + block, "", f"Agent type: {agent_type}. Model {_HINTS[agent_type]}"]
    limits = constraints.model_dump(exclude_defaults=True)
    if limits:
        lines.append("Constraints:")
        for key, value in limits.items():
            if key == "require_preferences":
                lines.append("- require_preferences: true (include at least one preference node)")
            else:
                lines.append(f"- {key}: {value} ({_CONSTRAINT_TEXT[key].format(value)})")
    if stated:
        lines.append("Sizes the description states (use them):")
        lines.extend(stated_lines(stated))
    lines.append(ANSWER_INSTRUCTION)
    return "\n".join(lines)


def read_system_prompt(text: str) -> tuple[str, GMNConstraints]:
    """Agent type and constraints back from a `system_prompt` (the mock model reads them)."""
    agent = _AGENT_LINE.search(text)
    agent_type = agent.group(1) if agent and agent.group(1) in AGENT_TYPES else "general"
    limits: dict[str, Any] = {}
    for key, value in _CONSTRAINT_LINE.findall(text):
        if key == "require_preferences":
            limits[key] = value == "true"
        elif key in _CONSTRAINT_TEXT and value.isdigit() and int(value) >= 1:
            limits[key] = int(value)
    return agent_type, GMNConstraints.model_validate(limits)


def first_request(
    spec: GMNPrompt,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int | None = None,
    json_mode: bool = False,
    example: ExampleChoice = "explorer",
    profile: Profile = "full",
    stated: list[StatedSize] | None = None,
) -> LLMRequest:
    """Round 1 of a generation: system rules + the user's prompt; never a "```" stop sequence."""
    system = system_prompt(spec.agent_type, spec.constraints, example, profile, stated)
    return LLMRequest.chat(
        spec.custom_id,
        [
            Message(role="system", content=system),
            Message(role="user", content=spec.prompt),
        ],
        temperature=temperature,
        max_tokens=max_tokens,
        response_format={"type": "json_object"} if json_mode else None,
    )


def refine_message(
    errors: list[GMNError],
    feedback: str | None = None,
    document: Any = None,
    limit: int = MAX_LISTED_ERRORS,
) -> str:
    """The follow-up user turn: the violations grouped by rule, most basic first, to fix."""
    lines: list[str] = []
    if errors:
        lines.append("Your GMN document is not valid. Fix these problems, the most basic first:")
        lines.extend(render_groups(group_errors(errors, document), limit))
    if feedback:
        lines.append(f"Change requested: {feedback.strip()}")
    lines.append(
        "Fix every error and answer with the corrected document only. " + ANSWER_INSTRUCTION
    )
    return "\n".join(lines)


def refine_request(
    request: LLMRequest, answer: str, errors: list[GMNError], feedback: str | None = None
) -> LLMRequest:
    """The next round: the original turns, the latest answer and its errors (context stays bounded).

    Earlier failed answers are dropped: the model needs the last attempt and what is wrong with
    it, and a conversation that grows by one document per round would grow the cost with it.
    """
    base = []
    for message in request.messages:
        if message.role == "assistant":
            break
        base.append(message)
    messages = [
        *base,
        Message(role="assistant", content=answer),
        Message(role="user", content=refine_message(errors, feedback)),
    ]
    return request.with_messages(messages)


# --- constraints (GMN090) ---------------------------------------------------------------------


def check_constraints(document: Any, constraints: GMNConstraints) -> list[GMNError]:
    """GMN090 errors for a decoded document that breaks the request's constraints."""
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        return []
    nodes = document["nodes"]
    errors: list[GMNError] = []
    limits = constraints.model_dump()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or node.get("type") not in SIZE_LIMITS:
            continue
        prop, limit_key = SIZE_LIMITS[node["type"]]
        props = node.get("properties")
        size = props.get(prop) if isinstance(props, dict) else None
        limit = limits[limit_key]
        if limit is not None and type(size) is int and size > limit:
            node_id = node.get("id") if isinstance(node.get("id"), str) else None
            errors.append(
                GMNError(
                    code="GMN090",
                    path=f"$.nodes[{i}].properties.{prop}",
                    node=node_id,
                    message=f"{prop} is {size}; the {limit_key} constraint allows at most {limit}",
                )
            )
    if constraints.max_nodes is not None and len(nodes) > constraints.max_nodes:
        message = f"the document has {len(nodes)} nodes; max_nodes allows {constraints.max_nodes}"
        errors.append(GMNError(code="GMN090", path="$.nodes", message=message))
    types = {n.get("type") for n in nodes if isinstance(n, dict)}
    if constraints.require_preferences and "preference" not in types:
        message = "require_preferences is set but the document has no preference node"
        errors.append(GMNError(code="GMN090", path="$.nodes", message=message))
    return errors
