"""The `gmn` task reviewer: validate each answer, finalize it or queue the refinement round.

Registered as `gmn` in the `batchyard.tasks` entry-point group. The executor calls it after
every successful answer of a GMN job; a refinement is returned as the next request and runs
as a normal queued job (rate-limited, failover-capable), never as a loop inside a worker.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from schemas.gmn import validate_reply
from schemas.gmn.prompts import GMNRecord, GMNTaskData, RoundVerdict, token_counts
from schemas.gmn.rounds import NextRound, check_answer, plan_next_round
from schemas.job import Job
from schemas.request import LLMRequest, Message
from schemas.result import ErrorInfo, LLMResult, Usage
from schemas.structured import Issue, Verdict
from workers.tasks import Review
from workers.validators import MAX_ISSUES, pointer


def review(job: Job, result: LLMResult) -> Review:
    """Finalize a valid (or last-round) answer, else ask for a corrected document next round."""
    assert job.task is not None
    task = job.task
    try:
        data = GMNTaskData.model_validate(task.data)
    except ValidationError as exc:
        result.status = "errored"
        result.error = ErrorInfo(code="invalid_task", message=f"bad gmn task data: {exc}")
        return Review(result=result)
    data.usage = Usage(
        input_tokens=data.usage.input_tokens + result.usage.input_tokens,
        output_tokens=data.usage.output_tokens + result.usage.output_tokens,
        cached_tokens=data.usage.cached_tokens + result.usage.cached_tokens,
    )
    if result.cost_usd is not None:
        data.cost_usd = (data.cost_usd or 0.0) + result.cost_usd
    answer = result.output or ""
    request = job.request
    checked = check_answer(
        answer,
        data,
        finish_reason=result.finish_reason,
        max_tokens=_budget(request),
        output_tokens=result.usage.output_tokens,
    )
    errors = checked.errors
    verdict = RoundVerdict(
        round=task.round, valid=not errors, codes=checked.codes, strategy=data.strategy
    )
    data.history.append(verdict)
    if errors and task.round < task.max_rounds:
        plan = plan_next_round(
            [(m.role, m.text) for m in request.messages],
            answer,
            checked,
            data,
            temperature=request.body.get("temperature"),
            max_tokens=_budget(request),
            output_tokens=result.usage.output_tokens,
            endpoints=len(job.route),
        )
        data.strategy = plan.strategy
        # The executor copies `task` into the next round's job: what is stored here carries over.
        task.data = data.model_dump(mode="json", exclude_defaults=True)
        return Review(next_request=next_request(request, plan), rotate_route=plan.rotate_route)
    task.data = data.model_dump(mode="json", exclude_defaults=True)
    record = GMNRecord(
        document=checked.document if isinstance(checked.document, dict) else None,
        valid=not errors,
        errors=errors,
        rounds=task.round,
        agent_type=data.agent_type,
        tokens=token_counts(data.usage),
        cost_usd=data.cost_usd,
        history=data.history,
    )
    # Only the final result is written: it carries every round's usage and cost, so batch
    # totals (and budgets) count the refinement rounds too.
    result.usage, result.cost_usd = data.usage, data.cost_usd
    result.extra = {"gmn": record.model_dump(mode="json")}
    return Review(result=result)


def next_request(request: LLMRequest, plan: NextRound) -> LLMRequest:
    """The planned round as a request: same custom_id, options and format, new turns."""
    messages = [Message(role=role, content=content) for role, content in plan.turns]  # type: ignore[arg-type]
    follow_up = request.with_messages(messages)
    return follow_up.with_body(temperature=plan.temperature, max_tokens=plan.max_tokens)


def _budget(request: LLMRequest) -> int | None:
    """The output limit the request's body sets, in either spelling."""
    body = request.body
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit if isinstance(limit, int) else None


def validate(answer: str, request: LLMRequest, options: dict[str, Any]) -> Verdict:
    """GMN as a `batchyard.validators` entry (`gmn`): any structured request can ask for a GMN
    document; errors carry GMN's own codes and messages, at JSON pointers."""
    report = validate_reply(answer)
    issues = [
        Issue(
            pointer=gmn_pointer(e.path),
            message=f"{e.code}: {e.message}" + (f" (node {e.node})" if e.node else ""),
            code=e.code,
        )
        for e in report.errors[:MAX_ISSUES]
    ]
    return Verdict(valid=report.valid, errors=issues, value=report.document)


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def gmn_pointer(path: str) -> str:
    """A GMN error path (`$.nodes[2].id`) as a JSON pointer (`/nodes/2/id`); a path that is
    not a JSON path (`line 3` of the text form) points at the whole answer."""
    if not path.startswith("$"):
        return ""
    return pointer(m.group(1) or m.group(2) for m in _STEP.finditer(path[1:]))
