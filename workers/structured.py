"""The `structured` task reviewer: validate each answer, finalize it or queue a refine round.

Registered as `structured` in the `batchyard.tasks` entry-point group. A request gets this task
at submit when its body asks for a JSON Schema or names a validator (`schemas.structured`);
GMN batches are structured requests whose validator is `gmn`. A refine round is the next
request of the same job, run as a normal queued job (rate-limited, retried, failed over): the
user's own turns, the last answer, and the validator's errors — or, when a round repeats the
last one's errors, another strategy (`schemas.refine`), always fitted into the context.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from providers.base import Capabilities
from schemas.config import EndpointConfig
from schemas.job import Job, Task
from schemas.refine import (
    REFINE_HEAD,
    REFINE_TAIL,
    NextRound,
    base_messages,
    noted,
    plan_next_round,
)
from schemas.refine.context import fit_round
from schemas.request import LLMRequest
from schemas.result import ErrorInfo, LLMResult
from schemas.structured import (
    Issue,
    RoundRecord,
    StructuredRecord,
    TaskState,
    Verdict,
    summed,
)
from workers.tasks import Review
from workers.validators import Plugin, Reply, Switch, UnknownValidator, plugin


def review(job: Job, result: LLMResult) -> Review:
    """Finalize a valid (or last-round) answer, else queue the next round (or, in round 1 of
    best-of-k on an endpoint without `n`, the next draw)."""
    assert job.task is not None
    task, request = job.task, job.request
    try:
        state = TaskState.model_validate(task.data)
        check = plugin(state.validator)
    except (ValidationError, UnknownValidator) as exc:
        return _invalid(result, str(exc))
    problem = check.problem(state.options)
    if problem is not None:
        return _invalid(result, problem)
    reply = Reply(result.finish_reason, _budget(request), result.usage.output_tokens)
    drawn = candidates(result)
    answer, verdict = drawn[0], check.check(drawn[0], request, state.options, reply)
    for other in drawn[1:]:
        if verdict.valid:
            break
        again = check.check(other, request, state.options, reply)
        if again.valid:
            answer, verdict = other, again
    _record(state, task.round, answer, verdict, len(drawn), result)
    kept = state.history[-1].answer
    if kept is not None and kept != answer:
        # An earlier draw of this round was kept (fewer errors): the next round refines it.
        answer = kept
        verdict = check.check(answer, request, state.options, Reply(None, reply.max_tokens))
    if not verdict.valid and task.round == 1 and state.history[-1].candidates < state.candidates:
        # Best-of-k where the endpoint gave one answer: the same request again, same round.
        task.data = state.model_dump(mode="json", exclude_defaults=True)
        return Review(next_request=request, same_round=True)
    if not verdict.valid and task.round < task.max_rounds:
        plan = plan_next_round(
            request.body.get("messages") or [],
            answer,
            verdict,
            state.history,
            check.feedback(state.options),
            turns=state.turns,
            prompt_chars=state.prompt_chars,
            temperature=request.body.get("temperature"),
            max_tokens=_budget(request),
            output_tokens=result.usage.output_tokens,
            endpoints=len(job.route),
            context_tokens=state.context_tokens,
        )
        switch = check.switch(state.options, verdict)
        if switch is not None:
            plan = _simplified(request, state, switch, plan.temperature, _budget(request))
            state.options = switch.options
        state.strategy = plan.strategy
        # The executor copies `task` into the next round's job: what is stored here carries over.
        task.data = state.model_dump(mode="json", exclude_defaults=True)
        nxt = request.with_messages(plan.messages)
        if plan.temperature is not None:
            nxt = nxt.with_body(temperature=plan.temperature)
        if plan.max_tokens is not None:
            nxt = nxt.with_body(**{_budget_field(request): plan.max_tokens})
        return Review(next_request=nxt, rotate_route=plan.rotate_route)
    task.data = state.model_dump(mode="json", exclude_defaults=True)
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
    result.output = answer
    result.extra = {**result.extra, **check.records(record, verdict, state.options)}
    return Review(result=result)


def _simplified(
    request: LLMRequest,
    state: TaskState,
    switch: Switch,
    temperature: float | None,
    max_tokens: int | None,
) -> NextRound:
    """A `simplify` (or `no_example`) round: the user's own turns under the switch's system
    message, its note after the prompt, without the failed answer (it answered another
    target, or copied what is no longer shown)."""
    base = base_messages(request.body.get("messages") or [], state.turns, state.prompt_chars)
    system = {"role": "system", "content": switch.system}
    own = base[1:] if base and base[0].get("role") == "system" else base
    turns = noted([system, *own], switch.note)
    fitted = fit_round(lambda _n, _a: turns, 0, max_tokens, state.context_tokens)
    return NextRound(
        fitted.turns, switch.strategy, temperature, fitted.max_tokens, fits=fitted.fits
    )


def _invalid(result: LLMResult, why: str) -> Review:
    result.status = "errored"
    result.error = ErrorInfo(code="invalid_task", message=f"structured task: {why}")
    return Review(result=result)


def _record(
    state: TaskState, round_: int, answer: str, verdict: Verdict, drawn: int, result: LLMResult
) -> None:
    """Add a round to the history; a further draw of best-of-k joins its round's record
    (its usage and cost added; its answer kept if valid, or if it has fewer errors)."""
    last = state.history[-1] if state.history else None
    entry = RoundRecord(
        round=round_,
        valid=verdict.valid,
        errors=verdict.errors,
        codes=verdict.codes,
        strategy=state.strategy,
        answer=answer,
        candidates=drawn,
        endpoint=result.endpoint,
        usage=result.usage,
        cost_usd=result.cost_usd,
    )
    if last is None or last.round != round_:
        state.history.append(entry)
        return
    usage, cost = summed([last, entry])
    better = verdict.valid or (not last.valid and len(verdict.errors) < len(last.errors))
    kept = entry if better else last
    state.history[-1] = kept.model_copy(
        update={"candidates": last.candidates + drawn, "usage": usage, "cost_usd": cost}
    )


def _budget(request: LLMRequest) -> int | None:
    """The output limit the request's body sets, in either spelling."""
    limit = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
    return limit if isinstance(limit, int) else None


def _budget_field(request: LLMRequest) -> str:
    return "max_completion_tokens" if "max_completion_tokens" in request.body else "max_tokens"


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


def prepare(
    request: LLMRequest, task: Task, settings: EndpointConfig, caps: Capabilities
) -> LLMRequest:
    """A structured request as one endpoint gets it: the validator's schema (or the request's
    own) where the endpoint decodes under one, and `n` for best-of-k where it takes `n`."""
    options = task.data.get("options")
    name = task.data.get("validator")
    strict = settings.structured.constrained
    constrained = caps.strict_schema if strict is None else strict
    check = _known(name) if constrained else None
    if check is not None:
        schema = check.wire_schema(options if isinstance(options, dict) else {})
        if schema is not None:
            spec = {"name": name, "schema": schema, "strict": check.strict_schema}
            request = request.with_body(
                response_format={"type": "json_schema", "json_schema": spec}
            )
    request = wire_request(request, constrained, "json_object" in caps.features)
    takes_n = settings.structured.n_choices
    k = task.data.get("candidates", 1)
    if (
        task.round == 1
        and (caps.n_choices if takes_n is None else takes_n)
        and isinstance(k, int)
        and k > 1
    ):
        request = request.with_body(n=k)
    return request


def _known(name: Any) -> Plugin | None:
    """The plugin of a task's validator, or None (the reviewer reports an unknown one)."""
    try:
        return plugin(name) if isinstance(name, str) else None
    except UnknownValidator:
        return None
