"""A GMN job's task is a structured task (`schemas.structured.TaskState`) whose validator is
`gmn`; its options are the GMN checks' inputs. Jobs queued by earlier versions carried a
`GMNTaskData` of their own (task kind `gmn`): `task_state` reads both."""

from __future__ import annotations

from typing import Any

from schemas.structured import Issue, RoundRecord, TaskState

from .prompts import GMNTaskData, RoundVerdict

VALIDATOR = "gmn"
#: The `GMNTaskData` fields the `gmn` validator reads (its options).
OPTION_FIELDS = frozenset(
    {
        *("agent_type", "constraints", "feedback", "examples", "profile", "hidden_examples"),
        *("stated", "layouts"),
    }
)


def gmn_options(data: GMNTaskData) -> dict[str, Any]:
    """The validator options of a GMN job (the examples always: a request naming the `gmn`
    validator without any was shown none)."""
    dumped = data.model_dump(mode="json", include=set(OPTION_FIELDS), exclude_defaults=True)
    return {**dumped, "examples": list(data.examples)}


def check_data(options: dict[str, Any]) -> GMNTaskData:
    """The checks' inputs from validator options; raises pydantic's ValidationError."""
    return GMNTaskData.model_validate({"examples": [], **options})


def new_state(data: GMNTaskData, candidates: int = 1) -> TaskState:
    """Round 1's task state (turns 0: the user's turns are those before the first answer)."""
    return TaskState(
        validator=VALIDATOR,
        options=gmn_options(data),
        prompt_chars=data.prompt_chars,
        context_tokens=data.context_tokens,
        candidates=candidates,
    )


def task_state(raw: dict[str, Any]) -> TaskState:
    """A GMN job's task state, also from an earlier version's `GMNTaskData` (its usage and cost
    go with its first round); raises pydantic's ValidationError."""
    if "validator" in raw:
        return TaskState.model_validate(raw)
    data = GMNTaskData.model_validate(raw)
    state = new_state(data)
    state.strategy = data.strategy
    state.history = [
        RoundRecord(
            round=v.round,
            valid=v.valid,
            errors=[Issue(message=code, code=code) for code in v.codes],
            codes=v.codes,
            strategy=v.strategy,
        )
        for v in data.history
    ]
    if state.history:
        first = state.history[0]
        state.history[0] = first.model_copy(update={"usage": data.usage, "cost_usd": data.cost_usd})
    elif data.usage.input_tokens or data.usage.output_tokens:
        state.history = [
            RoundRecord(round=0, valid=False, usage=data.usage, cost_usd=data.cost_usd)
        ]
    return state


def verdicts(history: list[RoundRecord]) -> list[RoundVerdict]:
    """GMN's per-round view of the history (round, valid, codes, strategy)."""
    return [
        RoundVerdict(round=r.round, valid=r.valid, codes=r.codes, strategy=r.strategy)
        for r in history
        if r.round >= 1
    ]
