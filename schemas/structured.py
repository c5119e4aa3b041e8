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


class Issue(BaseModel):
    """One reason an answer is not valid: where (a JSON pointer into the answer) and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pointer: str = ""
    message: str
    #: A validator's own code for the error (JSON Schema: the failing keyword).
    code: str | None = None


class Verdict(BaseModel):
    """What a validator says of one answer."""

    model_config = ConfigDict(extra="forbid")

    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    #: The parsed answer, when it parsed.
    value: Any = None


class RoundRecord(BaseModel):
    """One round of a structured request, as its result's history keeps it."""

    model_config = ConfigDict(extra="forbid")

    round: int
    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    answer: str | None = None
    #: Answers the round drew (best-of-k); `answer` is the first valid one, else the first.
    candidates: int = 1
    endpoint: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None


class TaskState(BaseModel):
    """What a structured task carries from round to round (`Task.data`)."""

    model_config = ConfigDict(extra="forbid")

    validator: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: How many of the request's messages are the user's own turns (refine turns follow).
    turns: int = 0
    #: Answers asked for in the first round (best-of-k).
    candidates: int = 1
    history: list[RoundRecord] = Field(default_factory=list)


class StructuredRecord(BaseModel):
    """`result.extra["structured"]`: the verdict over all rounds."""

    model_config = ConfigDict(extra="forbid")

    validator: str
    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    rounds: int
    value: Any = None
    history: list[RoundRecord] = Field(default_factory=list)
