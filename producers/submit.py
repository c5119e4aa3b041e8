"""Turns input lines into queued messages in chunks, with no I/O: both clients share it."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from opentelemetry.trace import SpanContext

from schemas.batch_lines import LineError, parse_line, parse_object, plain_line
from schemas.bodies import BodyError, check_body
from schemas.config import AppConfig
from schemas.job import Task
from schemas.request import URL_KINDS, EndpointKind, LLMRequest, RouteHop
from schemas.result import ErrorInfo, LLMResult, Timings
from schemas.structured import DEFAULT_ROUNDS, JSON_SCHEMA, TASK_KIND, TaskState
from workers import validators
from workers.protocol import envelope
from workers.protocol.blob import MessageBlob
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.envelope import BatchEnvelopes
from workers.protocol.keys import Keys
from workers.tracing import enqueue_context, trace_enabled
from workers.validators import schema_of

Item = LLMRequest | dict[str, Any] | bytes | str


class _IdPrefixes:
    """Prefixes of message ids: 16 random hex digits drawn once per process (again after a
    fork), then a counter. os.urandom costs a syscall (0.08-4 ms measured here under load),
    which each chunk of 1,000 lines paid for its uuid4."""

    def __init__(self) -> None:
        self._pid = -1
        self._base = ""
        self._count = itertools.count()

    def next(self) -> str:
        """24 hex digits no other chunk of any process shares; a line adds 8 more."""
        if self._pid != os.getpid():
            self._pid, self._base, self._count = os.getpid(), os.urandom(8).hex(), itertools.count()
        return f"{self._base}{next(self._count) & 0xFFFFFFFF:08x}"


chunk_prefix = _IdPrefixes().next


def new_batch_id() -> str:
    """`batch_` + 24 hex digits, like the ids users know from the OpenAI Batch API."""
    return f"batch_{uuid.uuid4().hex[:24]}"


def kinds_for(endpoint: str | None) -> frozenset[EndpointKind] | None:
    """The kinds a batch for an OpenAI `endpoint` URL takes (None: any kind). A chat batch
    also takes Anthropic Message Batches lines: they are chat requests in another format."""
    if endpoint is None:
        return None
    if endpoint not in URL_KINDS:
        raise ValueError(f"unknown endpoint {endpoint!r} (known: {', '.join(URL_KINDS)})")
    kind = URL_KINDS[endpoint]
    return frozenset({"chat", "messages"}) if kind == "chat" else frozenset({kind})


def line_key(line: int) -> str:
    """Result key of an input line that has no usable custom_id of its own."""
    return f"#line:{line}"


@dataclass
class Chunk:
    """One round trip's worth of work."""

    blob: MessageBlob = field(default_factory=MessageBlob)
    enqueued_lines: list[int] = field(default_factory=list)
    enqueued_ids: list[str] = field(default_factory=list)
    errors: list[tuple[str, LLMResult]] = field(default_factory=list)


class ChunkBuilder:
    """Validates lines and builds dramatiq messages for one batch."""

    def __init__(
        self,
        batch_id: str,
        keys: Keys,
        config: AppConfig,
        route: list[RouteHop] | None = None,
        deadline: float | None = None,
        task: Task | None = None,
        *,
        lane: str = "",
    ) -> None:
        self.batch_id = batch_id
        self.lane = lane
        self.keys = keys
        self.config = config
        self.route = route or config.route("default")
        self.deadline = deadline
        self.envelopes = BatchEnvelopes(
            batch_id, self.route, deadline=deadline, task=task, lane=lane
        )
        #: The batch's submit span, linked from each request's producer span.
        self.trace_link: SpanContext | None = None
        #: The endpoint kinds lines may address (None: any).
        self.kinds: frozenset[EndpointKind] | None = None
        #: Whether tracing records spans, asked once per chunk (`build`).
        self._tracing: bool | None = None

    def build(self, lines: list[tuple[int, Item]]) -> Chunk:
        """Validate every line of a chunk; bad lines become error results, never exceptions."""
        chunk = Chunk()
        now = time.time()
        # One prefix per chunk + a counter: unique ids without a uuid4 per message.
        prefix = chunk_prefix()
        self._tracing = trace_enabled()
        # A plain line (the common one) goes the short way: checked by `plain_line`, written
        # by `plain_writer`, without a request model; spans need the long way.
        plain = None if self._tracing else self.envelopes.plain_writer(now)
        queue, add, has_task = self.envelopes.queue, chunk.blob.add, self.envelopes.has_task
        for n, (number, item) in enumerate(lines):
            if plain is not None and type(item) is bytes:
                line = plain_line(item, self.kinds)
                if line is not None and (has_task or "response_format" not in line[2]):
                    cid, kind, body = line
                    redis_id = f"{prefix}{n:08x}"
                    add(cid, queue, redis_id, plain(cid, kind, body, redis_id))
                    chunk.enqueued_lines.append(number)
                    chunk.enqueued_ids.append(cid)
                    continue
            try:
                request = self._request(item, number)
                self._check_route(request.route, number, request.custom_id)
                task = self._structured(request, number)
            except LineError as err:
                chunk.errors.append(self.line_error(err))
                continue
            self.append(chunk, f"{prefix}{n:08x}", request.custom_id, request, now, task)
            chunk.enqueued_lines.append(number)
            chunk.enqueued_ids.append(request.custom_id)
        return chunk

    def append(
        self,
        chunk: Chunk,
        redis_id: str,
        key: str,
        request: LLMRequest,
        now: float,
        task: dict[str, Any] | None = None,
    ) -> None:
        """Add the message of one line's first-hop job to the chunk's blob."""
        route = request.route
        endpoint = (route or self.route)[0].endpoint
        trace = enqueue_context(
            endpoint, self.batch_id, self.trace_link, unique=redis_id, enabled=self._tracing
        )
        queue, _, data = self.envelopes.encode(
            key, request, trace, redis_id, now, route=route, task=task
        )
        chunk.blob.add(key, queue, redis_id, data)

    def _request(self, item: Item, number: int) -> LLMRequest:
        if isinstance(item, LLMRequest):
            return self._checked(item, number)
        if isinstance(item, dict):
            return parse_object(item, number, self.kinds)
        return parse_line(item, number, self.kinds)

    def _checked(self, request: LLMRequest, number: int) -> LLMRequest:
        """A request built in code gets the checks a line gets, once, here."""
        cid = request.custom_id
        if self.kinds is not None and request.kind not in self.kinds:
            wanted = ", ".join(sorted(self.kinds))
            raise LineError(number, "kind", f"this batch takes {wanted} requests", cid)
        try:
            check_body(request.kind, request.body)
        except BodyError as bad:
            raise LineError(number, f"body.{bad.field}", bad.reason, cid) from None
        return request

    def _structured(self, request: LLMRequest, number: int) -> dict[str, Any] | None:
        """The `structured` task of a request that asks for a JSON Schema or names a
        validator (None: a plain request, or the batch has a task of its own)."""
        if self.envelopes.has_task:
            return None
        opts = request.batchyard
        if opts is None and "response_format" not in request.body:
            return None  # the common plain line: no validator named, no schema asked for
        name = opts.validator if opts is not None else None
        options = opts.options if opts is not None else {}
        cid = request.custom_id
        if name is None:
            if request.kind not in ("chat", "messages") or schema_of(request, options) is None:
                return None
            name = JSON_SCHEMA
        elif name not in validators.names():
            known = ", ".join(validators.names())
            why = f"no validator {name!r} is installed (known: {known})"
            raise LineError(number, "body.batchyard.validator", why, cid)
        if request.kind not in ("chat", "messages"):
            why = f"structured output needs a chat or messages request, not {request.kind}"
            raise LineError(number, "body.batchyard.validator", why, cid)
        if name == JSON_SCHEMA:
            schema = schema_of(request, options)
            if schema is None:
                why = "the json_schema validator needs a response_format json_schema"
                raise LineError(number, "body.response_format", why, cid)
            bad = validators.check_schema(schema)
            if bad is not None:
                raise LineError(number, "body.response_format.json_schema.schema", bad, cid)
        rounds = opts.max_rounds if opts is not None else None
        if rounds is None:
            first = (request.route or self.route)[0].endpoint
            endpoint = self.config.endpoints.get(first)
            rounds = endpoint.structured.max_rounds if endpoint is not None else DEFAULT_ROUNDS
        state = TaskState(
            validator=name,
            options=options,
            turns=len(request.messages),
            candidates=(opts.candidates if opts is not None else None) or 1,
        )
        data = state.model_dump(mode="json", exclude_defaults=True)
        return self.envelopes.task(Task(kind=TASK_KIND, max_rounds=rounds, data=data))

    def _check_route(self, route: list[RouteHop] | None, number: int, cid: str) -> None:
        for i, hop in enumerate(route or ()):
            if hop.endpoint not in self.config.endpoints:
                known = ", ".join(sorted(self.config.endpoints))
                raise LineError(
                    number,
                    f"body.route.{i}.endpoint",
                    f"unknown endpoint {hop.endpoint!r} (known: {known})",
                    cid,
                )

    def line_error(self, err: LineError) -> tuple[str, LLMResult]:
        """The errored result that stands for a bad line in the batch's error file."""
        now = time.time()
        result = LLMResult(
            custom_id=err.custom_id,
            batch_id=self.batch_id,
            status="errored",
            error=ErrorInfo(code="invalid_line", message=str(err), line=err.line),
            timings=Timings(enqueued_at=now, finished_at=now),
        )
        return line_key(err.line), result

    def duplicates(self, chunk: Chunk, positions: list[int]) -> list[tuple[str, LLMResult]]:
        """Errored results for lines whose custom_id an earlier line already used."""
        out = []
        for pos in positions:
            number, cid = chunk.enqueued_lines[pos], chunk.enqueued_ids[pos]
            out.append(
                self.line_error(LineError(number, "custom_id", f"duplicate custom_id {cid!r}", cid))
            )
        return out


def numbered(items: Iterable[Item], skip_blank: bool = True) -> Iterator[tuple[int, Item]]:
    """Number items from 1 like lines of a file, skipping blank lines."""
    for number, item in enumerate(items, start=1):
        if skip_blank and isinstance(item, bytes | str) and not item.strip():
            continue
        yield number, item


def chunks(items: Iterator[tuple[int, Item]], size: int) -> Iterator[list[tuple[int, Item]]]:
    """Fixed-size slices of an iterator, so memory stays bounded for any input size."""
    while batch := list(islice(items, size)):
        yield batch


def retry_chunk(builder: ChunkBuilder, dead: list[tuple[bytes, bytes]]) -> Chunk:
    """Messages that re-run dead letters from their first hop with no attempts so far."""
    chunk = Chunk()
    now = time.time()
    prefix = chunk_prefix()
    for n, (raw_key, raw) in enumerate(dead):
        redis_id, key = f"{prefix}{n:08x}", raw_key.decode()
        letter = DeadLetter.parse(raw)
        trace = enqueue_context(letter.route[0].endpoint, builder.batch_id, None, unique=redis_id)
        job = letter.job(
            builder.batch_id,
            key,
            enqueued_at=now,
            deadline=builder.deadline,
            lane=builder.lane,
            trace=trace,
        )
        queue, _, data = envelope.encode(job, redis_id=redis_id, now=now)
        chunk.blob.add(key, queue, redis_id, data)
    return chunk
