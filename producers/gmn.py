"""Bulk GMN generation: prompt lines in, one validated document (or its errors) out per line.

Each line becomes a first-round request with its own `gmn` task; the worker-side reviewer
(`workers.gmn_review`) validates every answer and queues refinement rounds. This module
submits those batches and turns finished results into output lines; the single-prompt API
(`generate_gmn`, `refine_gmn`) is a one-line batch. Reports: `producers.gmn_cli.GMNReport`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import orjson
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import Unpack

from producers.submit import Chunk, ChunkBuilder, chunks, new_batch_id, numbered
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
    RoundVerdict,
    check_constraints,
    first_request,
    parse_prompt_line,
    refine_request,
    token_counts,
)
from schemas.gmn.rounds import first_round
from schemas.job import Task
from schemas.request import LLMRequest, RouteHop
from schemas.result import LLMResult, Usage
from workers.protocol.batch_record import new_record
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.lanes import Priority

if TYPE_CHECKING:
    from producers.client import AsyncClient, Client

Route = str | list[RouteHop] | None
Document = dict[str, Any] | str | bytes
DEFAULT_ROUNDS = 3


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
            task = Task(kind="gmn", max_rounds=self.rounds, data=_dump(job.data))
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


def _dump(data: GMNTaskData) -> dict[str, Any]:
    return data.model_dump(mode="json", exclude_defaults=True)


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


def _start(
    client: Client | AsyncClient,
    rounds: int,
    opts: GMNOptions,
    window_s: float | None,
    lane: str,
) -> tuple[GMNChunkBuilder, dict[Any, Any]]:
    hops = client._route(opts.get("route"))
    deadline = time.time() + window_s if window_s else None
    builder = GMNChunkBuilder(
        new_batch_id(),
        client.keys,
        client.config,
        hops,
        deadline,
        rounds=rounds,
        options=opts,
        lane=lane,
    )
    metadata = {"task": "gmn", "rounds": str(rounds)}
    record = new_record(hops, deadline=deadline, lane=lane, metadata=metadata)
    return builder, record


def submit_batch(
    client: Client,
    lines: Iterable[Any] | Path,
    *,
    rounds: int = DEFAULT_ROUNDS,
    completion_window_s: float | None = None,
    priority: Priority = "normal",
    **opts: Unpack[GMNOptions],
) -> str:
    """Enqueue prompt lines as one GMN batch (bad lines become error entries); its id."""
    lane = client.lane(priority, client._route(opts.get("route")))
    builder, record = _start(client, rounds, opts, completion_window_s, lane)
    batch_key = client.keys.batch(builder.batch_id)
    client._create(client.redis.pipeline(transaction=False), builder.batch_id, record).execute()
    for part in chunks(numbered(_items(lines)), client.settings.enqueue_chunk):
        client._send(builder, builder.build(part))
    client._seal(keys=[batch_key], args=[time.time()])
    return builder.batch_id


async def asubmit_batch(
    client: AsyncClient,
    lines: Iterable[Any] | Path,
    *,
    rounds: int = DEFAULT_ROUNDS,
    completion_window_s: float | None = None,
    priority: Priority = "normal",
    **opts: Unpack[GMNOptions],
) -> str:
    """Async twin of `submit_batch`."""
    lane = await client.lane(priority, client._route(opts.get("route")))
    builder, record = _start(client, rounds, opts, completion_window_s, lane)
    batch_key = client.keys.batch(builder.batch_id)
    pipe = client.redis.pipeline(transaction=False)
    await client._create(pipe, builder.batch_id, record).execute()
    for part in chunks(numbered(_items(lines)), client.settings.enqueue_chunk):
        await client._send(builder, builder.build(part))
    await client._seal(keys=[batch_key], args=[time.time()])
    return builder.batch_id


# --- results -> output lines ------------------------------------------------------------------


def outcome(result: LLMResult, dead_letter: bytes | str | None = None) -> GMNOutcome:
    """The output line of a finished job; a failed call's rounds come from its dead letter."""
    raw = result.extra.get("gmn")
    if raw is not None:
        record = GMNRecord.model_validate(raw)
    else:  # the call itself failed (provider error, expired, cancelled): no verdict
        task = DeadLetter.parse(dead_letter).task if dead_letter else None
        data = GMNTaskData.model_validate(task.data if task else {})
        message = result.error.message if result.error else result.status
        code = result.error.code if result.error else result.status
        record = GMNRecord(
            valid=False,
            errors=[GMNError(code=code, path="$", message=message)],
            rounds=task.round if task else 0,
            agent_type=data.agent_type if task else None,
            tokens=token_counts(data.usage),
            cost_usd=data.cost_usd,
            history=data.history,
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
    client: Client, batch_id: str, entries: list[tuple[str, str, LLMResult]]
) -> list[GMNOutcome]:
    """Output lines of a page of results, reading dead letters for failed calls only."""
    failed = [key for _, key, r in entries if "gmn" not in r.extra]
    dead = client.redis.hmget(client.keys.failed(batch_id), failed) if failed else []
    by_key = dict(zip(failed, dead, strict=True))
    return [outcome(r, by_key.get(key)) for _, key, r in entries]


def follow(
    client: Client, batch_id: str, *, poll_s: float = 0.2
) -> Iterator[tuple[int, int, list[GMNOutcome]]]:
    """(done, total, new outcomes) as results arrive, until the batch finished and all are read."""
    after = "0-0"
    while True:
        page = client.results(batch_id, after, block_ms=int(poll_s * 1000))
        after = page.cursor
        batch = client.batch(batch_id)
        yield batch.counts.done, batch.counts.total, outcomes(client, batch_id, page.entries)
        if not page.read and batch.finished and not client.results(batch_id, after, count=1).read:
            return


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


def refine_job(
    document: Document,
    errors: list[GMNError] | list[dict[str, Any]] | None,
    *,
    prompt: str | None,
    agent_type: str,
    constraints: GMNConstraints | dict[str, Any] | None,
    feedback: str | None,
    opts: GMNOptions,
) -> PreparedJob | GMNOutcome:
    """The first request of a refinement, or the outcome itself when there is nothing to fix."""
    limits = GMNConstraints.model_validate(_limits(constraints or {}))
    spec = prompt_job(prompt or "Refine the GMN document below.", agent_type, limits)
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
    client: Client, item: GMNPrompt | PreparedJob, rounds: int, opts: GMNOptions
) -> GMNOutcome:
    """Submit a one-line batch, wait for it (bounded) and return its outcome."""
    timeout_s = opts.pop("timeout_s", 300.0)
    batch_id = submit_batch(client, [item], rounds=rounds, **opts)
    if not client.wait(batch_id, timeout_s=timeout_s, poll_s=0.05).finished:
        raise TimeoutError(f"GMN batch {batch_id} not finished after {timeout_s:g}s")
    entries = list(client.iter_results(batch_id))
    return outcomes(client, batch_id, entries)[0]


async def arun_one(
    client: AsyncClient, item: GMNPrompt | PreparedJob, rounds: int, opts: GMNOptions
) -> GMNOutcome:
    """Async twin of `run_one`."""
    timeout_s = opts.pop("timeout_s", 300.0)
    batch_id = await asubmit_batch(client, [item], rounds=rounds, **opts)
    deadline = time.monotonic() + timeout_s
    while not (await client.batch(batch_id)).finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"GMN batch {batch_id} not finished after {timeout_s:g}s")
        await asyncio.sleep(0.05)
    async for _, key, result in client.iter_results(batch_id):
        dead = None
        if "gmn" not in result.extra:
            dead = await client.redis.hget(client.keys.failed(batch_id), key)
        return outcome(result, dead)
    raise RuntimeError(f"GMN batch {batch_id} finished without a result")


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
