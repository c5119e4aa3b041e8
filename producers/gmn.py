"""Bulk GMN generation: prompt lines in, one validated document (or its errors) out per line.

Each line becomes a first-round request with its own structured task, validator `gmn`: the
generic reviewer (`workers.structured`, with GMN's checks from `workers.gmn_review`) validates
every answer and queues refinement rounds. This module
submits those batches and turns finished results into output lines; the single-prompt API
(`generate_gmn`, `refine_gmn`) is a one-line batch. Reports: `producers.gmn_cli.GMNReport`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import orjson
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import Unpack

from producers.core import ClientCore, Route, SubmitReport
from producers.redis_ops import Operation, cmd
from producers.submit import Chunk, ChunkBuilder, new_batch_id
from schemas.batch_lines import LineError
from schemas.config import AppConfig
from schemas.gmn import GMNError, ValidationReport, validate_gmn, validate_reply
from schemas.gmn.examples import ExampleChoice
from schemas.gmn.prompts import (
    DEFAULT_TEMPERATURE,
    GMNConstraints,
    GMNPrompt,
    GMNRecord,
    GMNTaskData,
    Profile,
    RoundVerdict,
    check_constraints,
    first_request,
    parse_prompt_line,
    refine_request,
    token_counts,
)
from schemas.gmn.rounds import first_round
from schemas.gmn.task import check_data, new_state, task_state, verdicts
from schemas.job import Task
from schemas.request import LLMRequest, RouteHop
from schemas.result import LLMResult, Usage
from schemas.structured import DEFAULT_ROUNDS, TASK_KIND, TaskState, summed
from workers.protocol.batch_record import new_record
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.lanes import Priority
from workers.protocol.results import ResultEntry

Document = dict[str, Any] | str | bytes


class GMNOptions(TypedDict, total=False):
    """Request and batch options shared by every GMN entry point."""

    route: Route
    temperature: float
    max_tokens: int | None
    json_mode: bool
    timeout_s: float
    #: Which complete example the prompt shows: the explorer, one unlike the agent type, none.
    example: ExampleChoice
    #: Context window to fit every round into; default: the route's `max_context_tokens`.
    context_tokens: int | None
    #: Best-of-k: answers drawn in the first round (`n` where the endpoint takes it, else
    #: up to k calls), the first valid one kept; default 1.
    candidates: int
    #: `lean`: ask for sizes and graph only, under a skeleton schema (`schemas.gmn.lean`);
    #: default `full`.
    profile: Profile


class BatchOptions(GMNOptions, total=False):
    """`generate_gmn_batch`'s options: the batch's, and the request options."""

    #: Rounds of validation and refinement per prompt; default: `DEFAULT_ROUNDS`.
    rounds: int
    #: Prompts not started within this many seconds end `expired`; default: no window.
    completion_window_s: float | None
    #: The batch's lane (see `Client.submit_many`); default: "normal".
    priority: Priority


class Refine(GMNOptions, total=False):
    """`refine_gmn`'s options: what to ask besides the document, and the request options."""

    #: The instruction; default: "Refine the GMN document below."
    prompt: str | None
    #: Default: "general".
    agent_type: str
    constraints: GMNConstraints | dict[str, Any] | None
    #: What to change, in words: the document is refined even if it has no error.
    feedback: str | None
    #: Rounds of validation and refinement; default: `DEFAULT_ROUNDS`.
    rounds: int


#: Errors found earlier in a document to refine; None: validate it here.
Errors = list[GMNError] | list[dict[str, Any]] | None


@dataclass
class PreparedJob:
    """A first-round request built elsewhere (refinement of an existing document)."""

    request: LLMRequest
    data: GMNTaskData


class GMNOutcome(BaseModel):
    """One output line: the final document and verdict of one prompt, over all its rounds."""

    custom_id: str | None
    agent_type: str | None = None
    document: dict[str, Any] | None = None
    valid: bool = False
    errors: list[GMNError] = []
    rounds: int | None = None
    endpoint: str | None = None
    tokens: dict[str, int] = Field(default_factory=lambda: token_counts(Usage()))
    #: USD over every round, by the endpoints' price tables; null when none has a price.
    cost: float | None = None
    model: str | None = None
    #: Status of the LLM call itself: an invalid document still "succeeded" as a call.
    status: str = "succeeded"
    #: Input line number, for lines rejected before anything was sent.
    line: int | None = None
    history: list[RoundVerdict] = []
    #: `full` or `lean` (`schemas.gmn.lean`): what the model was asked to write, in the end.
    profile: str | None = None
    #: The document keeps the sizes the prompt states (`schemas.gmn.stated`; true when it
    #: states none); null without a document or from versions before the check.
    grounded: bool | None = None


class GMNChunkBuilder(ChunkBuilder):
    """Validates prompt lines and builds first-round messages, each with its own task data."""

    def __init__(self, *args: Any, rounds: int, options: GMNOptions, lane: str = "") -> None:
        super().__init__(*args, lane=lane)
        self.rounds = rounds
        self.options = options

    def build(self, lines: list[tuple[int, Any]]) -> Chunk:
        """Bad lines become error results naming line and field; good ones become jobs."""
        chunk = Chunk()
        now, prefix = time.time(), uuid.uuid4().hex[:24]
        for n, (number, item) in enumerate(lines):
            try:
                job = self._job(item, number)
            except LineError as err:
                chunk.errors.append(self.line_error(err, _peek_agent_type(item)))
                continue
            state = new_state(job.data, self.options.get("candidates", 1))
            task = Task(kind=TASK_KIND, max_rounds=self.rounds, data=_dump(state))
            cid = job.request.custom_id
            self.append(chunk, f"{prefix}{n:08x}", cid, job.request, now, self.envelopes.task(task))
            chunk.enqueued_lines.append(number)
            chunk.enqueued_ids.append(cid)
        return chunk

    def _job(self, item: Any, number: int) -> PreparedJob:
        if isinstance(item, PreparedJob):
            return item
        spec = parse_prompt_line(item, number)
        opts = self.options
        request, data = first_round(
            spec,
            temperature=opts.get("temperature", DEFAULT_TEMPERATURE),
            max_tokens=opts.get("max_tokens"),
            json_mode=opts.get("json_mode", False),
            example=opts.get("example", "explorer"),
            context_tokens=opts.get("context_tokens") or context_limit(self.config, self.route),
            profile=opts.get("profile", "full"),
        )
        return PreparedJob(request, data)

    def line_error(self, err: LineError, agent_type: str | None = None) -> tuple[str, LLMResult]:
        """The usual invalid_line result, plus the GMN record every output line is built from."""
        key, result = super().line_error(err)
        error = GMNError(code="invalid_line", path=err.field or "$", message=str(err))
        record = GMNRecord(valid=False, errors=[error], rounds=0, agent_type=agent_type)
        result.extra = {"gmn": record.model_dump(mode="json")}
        return key, result


def context_limit(config: AppConfig, route: list[RouteHop]) -> int | None:
    """The smallest configured `max_context_tokens` along a route: every round must fit it."""
    limits = [
        endpoint.max_context_tokens
        for hop in route
        if (endpoint := config.endpoints.get(hop.endpoint)) is not None
        and endpoint.max_context_tokens is not None
    ]
    return min(limits) if limits else None


def _dump(state: TaskState) -> dict[str, Any]:
    return state.model_dump(mode="json", exclude_defaults=True)


def _peek_agent_type(item: Any) -> str | None:
    try:
        obj = orjson.loads(item) if isinstance(item, bytes | bytearray | str) else item
    except orjson.JSONDecodeError:
        return None
    agent = obj.get("agent_type", "general") if isinstance(obj, dict) else None
    return agent if isinstance(agent, str) else None


def _items(lines: Iterable[Any] | Path) -> Iterator[Any]:
    if isinstance(lines, Path):
        with lines.open("rb") as f:
            yield from f
    else:
        yield from lines


def submit_batch(
    core: ClientCore, lines: Iterable[Any] | Path, **opts: Unpack[BatchOptions]
) -> Operation[SubmitReport]:
    """Enqueue prompt lines as one GMN batch (bad lines become error entries)."""
    rounds = opts.get("rounds", DEFAULT_ROUNDS)
    hops = core.route(opts.get("route"))
    lane = yield from core.lane(opts.get("priority", "normal"), hops)
    deadline = core.deadline(opts.get("completion_window_s"))
    builder = GMNChunkBuilder(
        new_batch_id(),
        core.keys,
        core.config,
        hops,
        deadline,
        rounds=rounds,
        options=opts,
        lane=lane,
    )
    metadata = {"task": "gmn", "rounds": str(rounds)}
    record = new_record(hops, deadline=deadline, lane=lane, metadata=metadata)
    return (yield from core.submit_chunks(builder, record, _items(lines)))


# --- results -> output lines ------------------------------------------------------------------


def outcome(result: LLMResult, dead_letter: bytes | str | None = None) -> GMNOutcome:
    """The output line of a finished job; a failed call's rounds come from its dead letter."""
    raw = result.extra.get("gmn")
    if raw is not None:
        record = GMNRecord.model_validate(raw)
    else:  # the call itself failed (provider error, expired, cancelled): no verdict
        task = DeadLetter.parse(dead_letter).task if dead_letter else None
        state = task_state(task.data) if task else None
        usage, cost = summed(state.history) if state else (Usage(), None)
        message = result.error.message if result.error else result.status
        code = result.error.code if result.error else result.status
        record = GMNRecord(
            valid=False,
            errors=[GMNError(code=code, path="$", message=message)],
            rounds=task.round if task else 0,
            agent_type=check_data(state.options).agent_type if state else None,
            profile=check_data(state.options).profile if state else None,
            tokens=token_counts(usage),
            cost_usd=cost,
            history=verdicts(state.history) if state else [],
        )
    fields = record.model_dump()
    fields["cost"] = fields.pop("cost_usd")
    return GMNOutcome(
        custom_id=result.custom_id,
        endpoint=result.endpoint,
        model=result.model,
        status=result.status,
        line=result.error.line if result.error else None,
        **fields,
    )


def outcome_line(item: GMNOutcome) -> bytes:
    """One JSONL output line."""
    return orjson.dumps(item.model_dump(mode="json")) + b"\n"


def outcomes(
    core: ClientCore, batch_id: str, entries: list[ResultEntry]
) -> Operation[list[GMNOutcome]]:
    """Output lines of a page of results, reading dead letters for failed calls only."""
    failed = [key for _, key, r in entries if "gmn" not in r.extra]
    dead = (yield cmd("hmget", core.keys.failed(batch_id), failed)) if failed else []
    by_key = dict(zip(failed, dead, strict=True))
    return [outcome(r, by_key.get(key)) for _, key, r in entries]


@dataclass
class FollowStep:
    """What `follow_step` saw: progress, new output lines, where to read on, and whether
    the batch finished with every result read."""

    done: int
    total: int
    outcomes: list[GMNOutcome]
    cursor: str
    end: bool


def follow_step(
    core: ClientCore, batch_id: str, after: str, poll_s: float
) -> Operation[FollowStep]:
    """One step of following a GMN batch: the outcomes of results after `after`."""
    page = yield from core.results(batch_id, after, block_ms=int(poll_s * 1000))
    batch = yield from core.batch(batch_id)
    items = yield from outcomes(core, batch_id, page.entries)
    end = not page.read and batch.finished
    if end:
        end = not (yield from core.results(batch_id, page.cursor, count=1)).read
    return FollowStep(batch.counts.done, batch.counts.total, items, page.cursor, end)


# --- one prompt at a time -----------------------------------------------------------------------


def check(
    document: Document, constraints: GMNConstraints | dict[str, Any] | None
) -> ValidationReport:
    """Validate a document or an LLM reply, plus constraints (GMN090), without any Redis."""
    if isinstance(document, dict):
        report = validate_gmn(document)
    else:
        text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
        report = validate_reply(text)
    limits = GMNConstraints.model_validate(constraints or {})
    report.errors.extend(check_constraints(report.document, limits))
    report.valid = not report.errors
    return report


def prompt_job(
    prompt: str,
    agent_type: str = "general",
    constraints: GMNConstraints | dict[str, Any] | None = None,
    custom_id: str = "gmn",
) -> GMNPrompt:
    """A single prompt checked like a file line; a bad one raises ValueError naming the field."""
    line: dict[str, Any] = {"custom_id": custom_id, "prompt": prompt, "agent_type": agent_type}
    if constraints is not None:
        line["constraints"] = _limits(constraints)
    try:
        return parse_prompt_line(line, 1)
    except LineError as err:
        raise ValueError(f"{err.field}: {err.reason}") from None


def refine_job(document: Document, errors: Errors, opts: Refine) -> PreparedJob | GMNOutcome:
    """The first request of a refinement, or the outcome itself when there is nothing to fix."""
    feedback = opts.get("feedback")
    limits = GMNConstraints.model_validate(_limits(opts.get("constraints") or {}))
    prompt = opts.get("prompt") or "Refine the GMN document below."
    spec = prompt_job(prompt, opts.get("agent_type", "general"), limits)
    if errors is None:
        report = check(document, limits)
        found = report.errors
        if not found and not feedback:
            return GMNOutcome(
                custom_id=spec.custom_id,
                agent_type=spec.agent_type,
                document=report.document,
                valid=True,
                rounds=0,
            )
    else:
        found = [GMNError.model_validate(e) for e in errors]
    text = document if isinstance(document, str) else _text(document)
    first = first_request(
        spec,
        temperature=opts.get("temperature", DEFAULT_TEMPERATURE),
        max_tokens=opts.get("max_tokens"),
        json_mode=opts.get("json_mode", False),
    )
    request = refine_request(first, text, found, feedback)
    data = GMNTaskData(agent_type=spec.agent_type, constraints=limits, feedback=feedback)
    return PreparedJob(request, data)


def _text(document: dict[str, Any] | bytes) -> str:
    if isinstance(document, bytes):
        return document.decode("utf-8", "replace")
    return orjson.dumps(document).decode()


def _limits(constraints: GMNConstraints | dict[str, Any]) -> dict[str, Any]:
    if isinstance(constraints, GMNConstraints):
        return constraints.model_dump(exclude_defaults=True)
    return constraints


def run_one(
    core: ClientCore, item: GMNPrompt | PreparedJob, rounds: int, opts: GMNOptions
) -> Operation[GMNOutcome]:
    """Submit a one-line batch, wait for it (bounded) and return its outcome."""
    timeout_s = opts.pop("timeout_s", 300.0)
    report = yield from submit_batch(core, [item], rounds=rounds, **opts)
    batch_id = report.batch_id
    if not (yield from core.wait(batch_id, timeout_s, 0.05)).finished:
        raise TimeoutError(f"GMN batch {batch_id} not finished after {timeout_s:g}s")
    after = "0-0"
    while (page := (yield from core.results(batch_id, after))).read:
        if page.entries:
            return (yield from outcomes(core, batch_id, page.entries[:1]))[0]
        after = page.cursor
    raise RuntimeError(f"GMN batch {batch_id} finished without a result")


def generate(
    core: ClientCore,
    prompt: str,
    agent_type: str,
    constraints: GMNConstraints | dict[str, Any] | None,
    rounds: int,
    opts: GMNOptions,
) -> Operation[GMNOutcome]:
    """`generate_gmn`: one prompt as a one-line batch, waited for."""
    return (yield from run_one(core, prompt_job(prompt, agent_type, constraints), rounds, opts))


def refine(
    core: ClientCore,
    document: Document,
    errors: Errors,
    opts: Refine,
) -> Operation[GMNOutcome]:
    """`refine_gmn`: nothing sent when the document has nothing to fix."""
    job = refine_job(document, errors, opts)
    if isinstance(job, GMNOutcome):
        return job
    request = cast(GMNOptions, {k: v for k, v in opts.items() if k in GMNOptions.__annotations__})
    return (yield from run_one(core, job, opts.get("rounds", DEFAULT_ROUNDS), request))


def read_outcomes(path: Path) -> Iterator[GMNOutcome]:
    """Output lines of a `gmn generate` file, streamed."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield GMNOutcome.model_validate_json(raw)
            except ValidationError as exc:
                raise ValueError(
                    f"{path}:{number}: not a GMN output line ({exc.errors()[0]['msg']})"
                ) from None
