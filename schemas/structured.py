"""Structured output for any request (#20): which validator checks the answer, how many refine
rounds it may take, and what the result records of every round.

A request asks for it with `response_format: {type: json_schema, ...}` (the `json_schema`
validator), or by naming a validator in the body's `batchyard` extension:

    {"messages": [...], "response_format": {...},
     "batchyard": {"validator": "json_schema", "max_rounds": 3}}

The extension is batchyard's own, like `route` and `tier`: it is never sent upstream.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.request import StructuredOptions
from schemas.result import Usage

__all__ = ["StructuredOptions"]

#: Task kind of structured requests (the reviewer in `workers.structured`).
TASK_KIND = "structured"
DEFAULT_ROUNDS = 3
#: The validator a json_schema `response_format` gets when the request names none.
JSON_SCHEMA = "json_schema"


class StructuredDefaults(BaseModel):
    """An endpoint's `structured:` section: defaults for structured requests routed to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rounds: int = Field(default=DEFAULT_ROUNDS, ge=1, le=20)
    #: Whether the endpoint honours a JSON Schema on the wire (constrained decoding); None:
    #: what its adapter declares (`Capabilities.strict_schema`).
    constrained: bool | None = None
    #: Whether the endpoint returns several answers for one chat call (`n`); None: what its
    #: adapter declares (`Capabilities.n_choices`). llama.cpp's server answers `n > 1` with an
    #: error, so best-of-k there is k separate calls.
    n_choices: bool | None = None


# The models below serve structured requests only: pydantic builds each when first used, not in
# every process's start-up (`defer_build`, #22).


class Issue(BaseModel):
    """One reason an answer is not valid: where (a JSON pointer into the answer) and why."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    pointer: str = ""
    message: str
    #: A validator's own code for the error (JSON Schema: the failing keyword).
    code: str | None = None


class Verdict(BaseModel):
    """What a validator says of one answer."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    #: The parsed answer, when it parsed.
    value: Any = None
    #: The answer was cut off by the output limit: the next round says so (and may get more
    #: room) instead of listing the fragment's errors.
    truncated: bool = False
    #: The validator's own reading of the answer, for its feedback and record in the same
    #: review (never stored).
    native: Any = Field(default=None, exclude=True)

    @property
    def codes(self) -> list[str]:
        """Distinct error codes, in order."""
        return list(dict.fromkeys(e.code or "" for e in self.errors))


class RoundRecord(BaseModel):
    """One round of a structured request, as its result's history keeps it."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    round: int
    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    #: Distinct error codes, in order (what the strategy switch compares between rounds).
    codes: list[str] = Field(default_factory=list)
    #: How this round's request was made (`schemas.refine.strategy.STRATEGIES`).
    strategy: str | None = None
    answer: str | None = None
    #: Answers the round drew (best-of-k); `answer` is the first valid one, else the first.
    candidates: int = 1
    endpoint: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None


class TaskState(BaseModel):
    """What a structured task carries from round to round (`Task.data`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    validator: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: How many of the request's messages are the user's own turns (refine turns follow).
    turns: int = 0
    #: Length of the text of the last own (user) turn, so notes added to it can be dropped.
    prompt_chars: int | None = Field(default=None, ge=0)
    #: The context window to fit every round into (the route's smallest), when known.
    context_tokens: int | None = Field(default=None, ge=1)
    #: Answers asked for in the first round (best-of-k).
    candidates: int = 1
    #: Strategy of the round being answered; the reviewer sets the next one.
    strategy: str = "first"
    history: list[RoundRecord] = Field(default_factory=list)


class StructuredRecord(BaseModel):
    """`result.extra["structured"]`: the verdict over all rounds."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    validator: str
    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    rounds: int
    value: Any = None
    history: list[RoundRecord] = Field(default_factory=list)


def summed(history: list[RoundRecord]) -> tuple[Usage, float | None]:
    """Usage and cost over every round; cost None when no round had a price."""
    usage = Usage(
        input_tokens=sum(r.usage.input_tokens for r in history),
        output_tokens=sum(r.usage.output_tokens for r in history),
        cached_tokens=sum(r.usage.cached_tokens for r in history),
        reasoning_tokens=sum(r.usage.reasoning_tokens for r in history),
    )
    costs = [r.cost_usd for r in history if r.cost_usd is not None]
    return usage, (sum(costs) if costs else None)
