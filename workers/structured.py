"""The `structured` task reviewer: validate each answer, finalize it or queue a refine round.

Registered as `structured` in the `batchyard.tasks` entry-point group. A request gets this task
at submit when its body asks for a JSON Schema or names a validator (`schemas.structured`).
A refine round is the next request of the same job, run as a normal queued job (rate-limited,
retried, failed over): the user's own turns, the last answer, and the validator's errors.
"""

from __future__ import annotations

from pydantic import ValidationError

from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import ErrorInfo, LLMResult, Usage
from schemas.structured import Issue, RoundRecord, StructuredRecord, TaskState
from workers.tasks import Review
from workers.validators import UnknownValidator, validator

REFINE_HEAD = "Your answer is not valid. Errors, each at a JSON pointer into your answer:"
REFINE_TAIL = "Answer again with the corrected JSON document only, nothing else."


def review(job: Job, result: LLMResult) -> Review:
    """Finalize a valid (or last-round) answer, else ask for a corrected one next round."""
    assert job.task is not None
    task = job.task
    try:
        state = TaskState.model_validate(task.data)
        check = validator(state.validator)
    except (ValidationError, UnknownValidator) as exc:
        result.status = "errored"
        result.error = ErrorInfo(code="invalid_task", message=f"structured task: {exc}")
        return Review(result=result)
    drawn = candidates(result)
    answer, verdict = drawn[0], check(drawn[0], job.request, state.options)
    for other in drawn[1:]:
        if verdict.valid:
            break
        again = check(other, job.request, state.options)
        if again.valid:
            answer, verdict = other, again
    result.output = answer
    state.history.append(
        RoundRecord(
            round=task.round,
            valid=verdict.valid,
            errors=verdict.errors,
            answer=answer,
            candidates=len(drawn),
            endpoint=result.endpoint,
            usage=result.usage,
            cost_usd=result.cost_usd,
        )
    )
    # The executor copies `task` into the next round's job: what is stored here carries over.
    task.data = state.model_dump(mode="json", exclude_defaults=True)
    if not verdict.valid and task.round < task.max_rounds:
        return Review(next_request=refine_request(job.request, state.turns, answer, verdict.errors))
    record = StructuredRecord(
        validator=state.validator,
        valid=verdict.valid,
        errors=verdict.errors,
        rounds=task.round,
        value=verdict.value,
        history=state.history,
    )
    # Only the final result is written: it carries every round's usage and cost, so batch
    # totals (and budgets) count the refine rounds too.
    result.usage, result.cost_usd = summed(state.history)
    result.extra = {**result.extra, "structured": record.model_dump(mode="json")}
    return Review(result=result)


def candidates(result: LLMResult) -> list[str]:
    """Every answer of a call: a chat body's choices when it asked for several (`n`)."""
    choices = (result.body or {}).get("choices") if result.kind == "chat" else None
    if not isinstance(choices, list) or len(choices) < 2:
        return [result.output or ""]
    texts = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        texts.append(content if isinstance(content, str) else "")
    return texts


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


def refine_text(errors: list[Issue]) -> str:
    """The refine turn: every error as `pointer: message` (the whole answer is `""`)."""
    lines = [f'- "{e.pointer}": {e.message}' for e in errors]
    return "\n".join([REFINE_HEAD, *lines, REFINE_TAIL])


def refine_request(request: LLMRequest, turns: int, answer: str, errors: list[Issue]) -> LLMRequest:
    """The next round: the user's own turns, the last answer, and what is wrong with it."""
    own = request.body.get("messages") or []
    kept = own[:turns] if turns else own
    follow_up = [
        *kept,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": refine_text(errors)},
    ]
    return request.with_messages(follow_up)


def wire_request(request: LLMRequest, constrained: bool, json_mode: bool) -> LLMRequest:
    """The request as one endpoint gets it: where it decodes under a schema, the schema goes
    with `strict: true` (unless the body says otherwise); elsewhere the schema is left off (JSON
    mode asked instead where there is one) and the answer is validated after the fact."""
    fmt = request.body.get("response_format") if request.kind == "chat" else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return request
    if not constrained:
        return request.with_body(response_format={"type": "json_object"} if json_mode else None)
    spec = fmt.get("json_schema")
    if isinstance(spec, dict) and "strict" not in spec:
        return request.with_body(response_format={**fmt, "json_schema": {**spec, "strict": True}})
    return request
