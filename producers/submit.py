"""Turns input lines into queued messages in chunks, with no I/O: both clients share it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson
from opentelemetry.trace import SpanContext

from schemas.batch_lines import LineError, parse_line
from schemas.config import AppConfig
from schemas.job import Task
from schemas.request import LLMRequest, RouteHop
from schemas.result import ErrorInfo, LLMResult, Timings
from workers.keys import SEP, Keys, actor_for, queue_name
from workers.tracing import enqueue_context

Item = LLMRequest | dict[str, Any] | bytes | str


def new_batch_id() -> str:
    """`batch_` + 24 hex digits, like the ids users know from the OpenAI Batch API."""
    return f"batch_{uuid.uuid4().hex[:24]}"


def line_key(line: int) -> str:
    """Result key of an input line that has no usable custom_id of its own."""
    return f"#line:{line}"


#: model_dump_json without its Python wrapper (bytes, ready for orjson.Fragment).
_TO_JSON = LLMRequest.__pydantic_serializer__.to_json


@dataclass
class Chunk:
    """One round trip's worth of work."""

    blob: bytearray = field(default_factory=bytearray)
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
        self._actor = actor_for(lane)
        self.keys = keys
        self.config = config
        self.route = route or config.route("default")
        self.deadline = deadline
        self._route_dump = self._dump(self.route)
        self._task = task.model_dump() if task is not None else None
        #: The batch's submit span, linked from each request's producer span.
        self.trace_link: SpanContext | None = None

    def build(self, lines: list[tuple[int, Item]]) -> Chunk:
        """Validate every line of a chunk; bad lines become error results, never exceptions."""
        chunk = Chunk()
        now = time.time()
        # One random prefix per chunk + a counter: unique ids without a uuid4 per message.
        prefix = uuid.uuid4().hex[:24]
        for n, (number, item) in enumerate(lines):
            try:
                request = self._request(item, number)
                route = self._route_dump if request.route is None else self._dump(request.route)
                self._check_route(request.route, number, request.custom_id)
            except LineError as err:
                chunk.errors.append(self.line_error(err))
                continue
            fragment = orjson.Fragment(_TO_JSON(request, exclude_defaults=True))
            self.append(chunk, f"{prefix}{n:08x}", request.custom_id, fragment, route, now)
            chunk.enqueued_lines.append(number)
            chunk.enqueued_ids.append(request.custom_id)
        return chunk

    def append(
        self,
        chunk: Chunk,
        redis_id: str,
        key: str,
        request: orjson.Fragment,
        route: list[dict[str, Any]],
        now: float,
        task: dict[str, Any] | None = None,
    ) -> None:
        """Add one dramatiq message for a job at the first hop of `route` to the chunk's blob."""
        job = {
            "batch_id": self.batch_id,
            "key": key,
            "request": request,
            "route": route,
            "enqueued_at": now,
            "deadline": self.deadline,
            "task": task or self._task,
            "trace": enqueue_context(
                route[0]["endpoint"], self.batch_id, self.trace_link, unique=redis_id
            ),
        }
        if self.lane:
            job["lane"] = self.lane
        queue = queue_name(route[0]["endpoint"], self.lane)
        message = {
            "queue_name": queue,
            "actor_name": self._actor,
            "args": [job],
            "kwargs": {},
            "options": {"redis_message_id": redis_id},
            "message_id": redis_id,  # unique per message, which is all dramatiq needs
            "message_timestamp": int(now * 1000),
        }
        parts = (key.encode(), queue.encode(), redis_id.encode(), orjson.dumps(message), b"")
        chunk.blob += SEP.join(parts)

    @staticmethod
    def _dump(route: list[RouteHop]) -> list[dict[str, Any]]:
        return [h.model_dump(exclude_none=True) for h in route]

    def _request(self, item: Item, number: int) -> LLMRequest:
        if isinstance(item, LLMRequest):
            return item
        if isinstance(item, dict):
            return parse_line(orjson.dumps(item), number)
        return parse_line(item, number)

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
    prefix = uuid.uuid4().hex[:24]
    for n, (key, raw) in enumerate(dead):
        record = orjson.loads(raw)
        request = orjson.Fragment(orjson.dumps(record["request"]))
        builder.append(
            chunk,
            f"{prefix}{n:08x}",
            key.decode(),
            request,
            record["route"],
            now,
            record.get("task"),
        )
    return chunk
