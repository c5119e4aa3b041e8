"""What both clients do, written once: each operation yields its Redis work (`redis_ops`).

`Client` runs these operations on a synchronous connection and `AsyncClient` on an asyncio
one; neither adds logic of its own. `submit_chunks` is the one way typed items reach the
queues: `submit_many`, GMN batches (`producers.gmn`) and the gateway all go through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, TypeVar

from typing_extensions import Unpack

from producers.redis_ops import Cmd, Eval, Join, Operation, Pipe, Sleep, Spawn, cmd, pipe
from producers.submit import (
    Chunk,
    ChunkBuilder,
    Item,
    chunks,
    kinds_for,
    new_batch_id,
    numbered,
    retry_chunk,
)
from schemas.batch import Batch, BatchStatus
from schemas.config import AppConfig, load_config
from schemas.job import Task
from schemas.request import RouteHop
from schemas.result import LLMResult
from schemas.settings import Settings
from workers.protocol import lanes as L
from workers.protocol.batch_record import BatchNotFound, new_record, parse_lane, parse_record
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.health import HealthSnapshot, read_snapshot
from workers.protocol.keys import Keys
from workers.protocol.results import (
    RawEntry,
    ResultEntry,
    current,
    read_raw_stream,
    read_stream,
    write_call,
)
from workers.protocol.scripts import Lua

_Entry = TypeVar("_Entry", ResultEntry, RawEntry)

Route = str | list[RouteHop] | None
#: What a batch record holds before it is written (`workers.protocol.batch_record`).
Record = dict[str, str | bytes | float | int]

log = logging.getLogger("batchyard.producer")


class SubmitOptions(TypedDict, total=False):
    """What `submit_many` takes besides the items; every key may be left out."""

    #: The new batch's id; default: `batch_` + 24 hex digits.
    batch_id: str | None
    #: A route name from the config, the hops themselves, or None for the `default` route.
    route: Route
    metadata: dict[str, str] | None
    #: Requests not started within this many seconds end `expired`; default: no window.
    completion_window_s: float | None
    #: A follow-up reviewer for every request (`workers.tasks`), e.g. GMN rounds.
    task: Task | None
    #: Stop sending once the batch's cost reaches this many USD.
    budget_usd: float | None
    #: "high" batches are taken before normal ones by every worker, "low" ones only when
    #: nothing else waits; normal batches sharing an endpoint progress side by side.
    priority: L.Priority
    #: An OpenAI batch endpoint ("/v1/embeddings", ...): lines addressing another one are
    #: errors, as OpenAI's Batch API does; default: any kind.
    endpoint: str | None


@dataclass
class SubmitReport:
    """What a submission did: every input line is either enqueued or an error result."""

    batch_id: str
    lines: int
    enqueued: int
    invalid: int


@dataclass
class ResultPage:
    """Results read from a batch's stream, and the cursor to continue after them.

    `entries` may be empty while `cursor` moved: results superseded by `retry --failed`
    are skipped.
    """

    entries: list[ResultEntry]
    cursor: str
    read: int


@dataclass
class RawResultPage:
    """`ResultPage` with each result as its stored JSON (`raw_results`)."""

    entries: list[RawEntry]
    cursor: str
    read: int


@dataclass(frozen=True)
class FailedRequest:
    """One dead letter, as `failed_requests` lists it."""

    key: str
    code: str
    #: The endpoint kind of the request ("chat", "embeddings", ...).
    kind: str


class Sent(NamedTuple):
    """What sending one chunk did: lines enqueued, lines with an error result, and whether
    its enqueue sealed the batch."""

    enqueued: int
    invalid: int
    sealed: bool


class ClientCore:
    """Settings, config, key names and every client operation, with no I/O of its own."""

    def __init__(
        self, redis_url: str | None, settings: Settings | None, config: AppConfig | None
    ) -> None:
        settings = settings or Settings()
        if redis_url:
            settings = settings.model_copy(update={"redis_url": redis_url})
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set (or pass redis_url=...)")
        self.settings = settings
        self.redis_url: str = settings.redis_url
        self.config = config or load_config(self.settings.config)
        self.keys = Keys(self.settings.namespace)

    # --- submitting -------------------------------------------------------------------------

    def route(self, route: Route) -> list[RouteHop]:
        """The hops of a route given by name, as hops, or None for the `default` route."""
        if route is None:
            return self.config.route("default")
        if isinstance(route, str):
            return self.config.route(route)
        return route

    @staticmethod
    def deadline(window_s: float | None) -> float | None:
        """The epoch time a completion window ends (None: no window)."""
        return time.time() + window_s if window_s else None

    def lane(self, priority: L.Priority, route: list[RouteHop]) -> Operation[str]:
        """The queue lane for a new batch (see `workers.protocol.lanes.pick_lane`)."""
        if L.check_priority(priority) != "normal":
            return L.pick_lane(priority, [], 0)
        endpoint = route[0].endpoint
        depths = [cmd("llen", self.keys.queue(L.queue_name(endpoint, n))) for n in L.NORMAL_LANES]
        *lengths, turn = yield pipe(*depths, cmd("incr", self.keys.lane_turn))
        return L.pick_lane(priority, [int(d) for d in lengths], int(turn) - 1)  # INCR counts from 1

    def submit_many(
        self, items: Iterable[Item], **options: Unpack[SubmitOptions]
    ) -> Operation[SubmitReport]:
        """See `Client.submit_many`."""
        budget_usd = options.get("budget_usd")
        if budget_usd is not None and budget_usd <= 0:
            raise ValueError(f"budget_usd must be > 0, got {budget_usd}")
        kinds = kinds_for(options.get("endpoint"))
        hops = self.route(options.get("route"))
        lane = yield from self.lane(options.get("priority", "normal"), hops)
        deadline = self.deadline(options.get("completion_window_s"))
        batch_id = options.get("batch_id") or new_batch_id()
        task = options.get("task")
        builder = ChunkBuilder(batch_id, self.keys, self.config, hops, deadline, task, lane=lane)
        builder.kinds = kinds
        metadata = options.get("metadata")
        record = new_record(
            hops, deadline=deadline, lane=lane, metadata=metadata, budget_usd=budget_usd
        )
        return (yield from self.submit_chunks(builder, record, items))

    def submit_chunks(
        self, builder: ChunkBuilder, record: Record, items: Iterable[Item]
    ) -> Operation[SubmitReport]:
        """Create the batch `record` describes, enqueue `items` in chunks that `builder` checks
        and encodes (bad lines become error results), seal it; what was enqueued, what not.

        The next chunk is read and built while Redis runs the previous one: one chunk in
        flight. A short chunk is the last one and is sent in line, as nothing is left to build
        meanwhile (a one-line batch, the gateway's every job, then costs no task or thread).
        Reading the next part before sending a full one would leave Redis idle while the
        input is parsed: that cost `submit_file` ~35% of its rate (53k vs 83k lines/s).
        """
        batch_id = builder.batch_id
        # The record is created in the round trip of the first chunk (before its messages,
        # so no worker sees a message of a batch that does not exist yet).
        create: Pipe | None = self._create(batch_id, record)
        report = SubmitReport(batch_id, 0, 0, 0)
        pending = None
        sealed = False
        size = self.settings.enqueue_chunk
        for part in chunks(numbered(items), size):
            report.lines += len(part)
            chunk = builder.build(part)
            if pending is not None:
                self._count(report, (yield Join(pending)))
                pending = None
            if len(part) < size:  # the last chunk: it seals the batch as it is enqueued
                sent = yield from self._send(builder, chunk, create, seal=True)
                sealed = self._count(report, sent)
            else:
                pending = yield Spawn(self._send(builder, chunk, create))
            create = None
        if pending is not None:
            self._count(report, (yield Join(pending)))
        if create is not None:  # no line at all
            yield create
        if not sealed:
            yield Eval(Lua.SEAL, {"keys": [self.keys.batch(batch_id)], "args": [time.time()]})
        log.info(
            "batch %s submitted: %d lines, %d enqueued, %d invalid",
            batch_id,
            report.lines,
            report.enqueued,
            report.invalid,
            extra={"batch_id": batch_id},
        )
        return report

    @staticmethod
    def _count(report: SubmitReport, sent: Sent) -> bool:
        """Add a chunk's counts to the report; whether it sealed the batch."""
        report.enqueued += sent.enqueued
        report.invalid += sent.invalid
        return sent.sealed

    def _create(self, batch_id: str, record: Record) -> Pipe:
        """The writes that create and index a batch record; the index of batches expires with
        them, so ids older than the result TTL go."""
        stale = time.time() - self.settings.result_ttl_s
        return pipe(
            cmd("hset", self.keys.batch(batch_id), mapping=record),
            cmd("zadd", self.keys.batches, {batch_id: record["created_at"]}),
            cmd("zremrangebyscore", self.keys.batches, "-inf", stale),
        )

    def _send(
        self, builder: ChunkBuilder, chunk: Chunk, before: Pipe | None = None, seal: bool = False
    ) -> Operation[Sent]:
        """Enqueue one chunk and record its bad lines, after `before`'s commands in the same
        round trip. With `seal`, the enqueue also seals the batch, unless a line turned out a
        duplicate: its error result is written first, then the batch sealed on its own
        (sealed, the batch may finish as soon as every counted line has its result)."""
        ops: list[Cmd | Eval] = list(before.ops) if before is not None else []
        if chunk.errors:  # counted before the enqueue that may seal and finish the batch
            ops.append(self._write(chunk.errors))
        at = len(ops)
        if chunk.blob:
            ttl, seal_at = self.settings.result_ttl_s, time.time() if seal else None
            call = chunk.blob.enqueue_call(self.keys, builder.batch_id, ttl, seal_at)
            ops.append(Eval(Lua.ENQUEUE, call))
        if not ops:
            return Sent(0, 0, False)
        replies = yield pipe(*ops)
        dups = replies[at] if chunk.blob else []
        if dups:
            yield self._write(builder.duplicates(chunk, dups))
        enqueued = len(chunk.enqueued_ids) - len(dups)
        return Sent(enqueued, len(chunk.errors) + len(dups), seal and bool(chunk.blob) and not dups)

    def _write(self, items: list[tuple[str, LLMResult]]) -> Eval:
        """Script call for line-error results; they also count towards the batch total."""
        results = [(key, result, True, b"") for key, result in items]
        return Eval(Lua.WRITE_RESULTS, write_call(self.keys, self.settings.result_ttl_s, results))

    # --- reading ----------------------------------------------------------------------------

    def batch(self, batch_id: str) -> Operation[Batch]:
        """The batch's current record."""
        return parse_record(batch_id, (yield cmd("hgetall", self.keys.batch(batch_id))))

    def results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> Operation[ResultPage]:
        """Up to `count` results after the stream id `after`."""
        page = yield from self._page(batch_id, after, count, block_ms, read_stream)
        return ResultPage(*page)

    def raw_results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> Operation[RawResultPage]:
        """`results` with each result as its stored JSON, not parsed (a writer that only
        re-encodes it saves the model's validation: most of `collect`'s CPU per line)."""
        page = yield from self._page(batch_id, after, count, block_ms, read_raw_stream)
        return RawResultPage(*page)

    def _page(
        self,
        batch_id: str,
        after: str,
        count: int,
        block_ms: int | None,
        read: Callable[[Any, str], tuple[list[_Entry], str]],
    ) -> Operation[tuple[list[_Entry], str, int]]:
        """Read up to `count` stream entries with `read`; (the current ones, cursor, read)."""
        stream = {self.keys.stream(batch_id): after}
        raw = yield cmd("xread", stream, count=count, block=block_ms)
        entries, cursor = read(raw, after)
        if not entries:
            return [], cursor, 0
        markers = yield cmd("hmget", self.keys.done(batch_id), [e[1] for e in entries])
        return current(entries, markers), cursor, len(entries)

    def next_results(
        self, batch_id: str, after: str, follow: bool
    ) -> Operation[tuple[ResultPage, bool]]:
        """One step of `iter_results`: a page, and whether there is nothing more to read
        (with `follow`, only once the batch finished)."""
        page = yield from self.results(batch_id, after, block_ms=1000 if follow else None)
        if page.read:
            return page, False
        if not follow:
            return page, True
        if not (yield from self.batch(batch_id)).finished:
            return page, False
        return page, not (yield from self.results(batch_id, page.cursor)).read

    def health(self, endpoints: list[str]) -> Operation[dict[str, HealthSnapshot]]:
        """Shared health and breaker state of endpoints, as the workers record it."""
        out = {}
        for name in endpoints:
            raw, latencies = yield pipe(
                cmd("hgetall", self.keys.health(name)),
                cmd("lrange", self.keys.latency(name), 0, -1),
            )
            window = self.config.endpoints[name].breaker.window_s
            out[name] = read_snapshot(raw, latencies, name, window)
        return out

    def wait(self, batch_id: str, timeout_s: float | None, poll_s: float) -> Operation[Batch]:
        """The batch's record once it finished (or the timeout passed)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            batch = yield from self.batch(batch_id)
            if batch.finished or (deadline is not None and time.monotonic() > deadline):
                return batch
            yield Sleep(poll_s)

    # --- acting on a batch ------------------------------------------------------------------

    def cancel(self, batch_id: str) -> Operation[BatchStatus]:
        """Cancel a batch: queued requests end `cancelled` unsent, in-flight ones finish."""
        status = yield Eval(
            Lua.CANCEL,
            {
                "keys": [self.keys.batch(batch_id), self.keys.cancels],
                "args": [time.time(), batch_id],
            },
        )
        if status is None:
            raise BatchNotFound(batch_id)
        return BatchStatus(status.decode())

    def dead_letters(self, batch_id: str, page: int) -> Operation[list[tuple[bytes, bytes]]]:
        """Every (key, dead letter) of a batch, read `page` at a time (HSCAN)."""
        out: list[tuple[bytes, bytes]] = []
        cursor = None
        while cursor != 0:
            cursor, found = yield cmd("hscan", self.keys.failed(batch_id), cursor or 0, count=page)
            out += found.items()
        return out

    def failed_requests(self, batch_id: str) -> Operation[list[FailedRequest]]:
        """Every request that ended in error: its key, error code and endpoint kind."""
        yield from self.batch(batch_id)
        return [
            FailedRequest(key.decode(), *DeadLetter.code_and_kind_of(dead))
            for key, dead in (yield from self.dead_letters(batch_id, 1000))
        ]

    def failures(self, batch_id: str) -> Operation[dict[str, list[str]]]:
        """Keys of requests that ended in error (dead letters), grouped by error code."""
        out: dict[str, list[str]] = {}
        for failed in (yield from self.failed_requests(batch_id)):
            out.setdefault(failed.code, []).append(failed.key)
        return out

    def retry_failed(self, batch_id: str, completion_window_s: float | None) -> Operation[int]:
        """Re-run every failed request of a batch with a fresh attempt budget; how many."""
        yield from self.batch(batch_id)
        lane = parse_lane((yield cmd("hget", self.keys.batch(batch_id), "lane")))
        route, deadline = self.config.route("default"), self.deadline(completion_window_s)
        builder = ChunkBuilder(batch_id, self.keys, self.config, route, deadline, lane=lane)
        retried, pending = 0, (yield from self.dead_letters(batch_id, 500))
        for start in range(0, len(pending), 500):
            chunk = retry_chunk(builder, pending[start : start + 500])
            retried += int(
                (yield Eval(Lua.RETRY_FAILED, chunk.blob.retry_call(self.keys, batch_id)))
            )
        return retried
