"""The producer API: submit batches, read their state and results. Sync and async."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from typing_extensions import Unpack

from producers import gmn
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
from schemas.gmn import GMNError, ValidationReport
from schemas.gmn.prompts import GMNConstraints
from schemas.job import Task
from schemas.request import RouteHop
from schemas.result import LLMResult
from schemas.settings import Settings
from workers.protocol import lanes as L
from workers.protocol.batch_record import BatchNotFound, new_record, parse_lane, parse_record
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.health import HealthSnapshot, read_snapshot
from workers.protocol.keys import Keys
from workers.protocol.results import ResultEntry, current, read_stream, write_call
from workers.protocol.scripts import Lua, ScriptCall, register

Route = str | list[RouteHop] | None
GMNLimits = GMNConstraints | dict[str, Any] | None


log = logging.getLogger("batchyard.producer")


@dataclass
class SubmitReport:
    """What `submit_many` did: every input line is either enqueued or an error result."""

    batch_id: str
    lines: int
    enqueued: int
    invalid: int


class _Base:
    def __init__(
        self, redis_url: str | None, settings: Settings | None, config: AppConfig | None
    ) -> None:
        settings = settings or Settings()
        if redis_url:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self.settings = settings
        if not self.settings.redis_url:
            raise ValueError("REDIS_URL is not set (or pass redis_url=...)")
        self.config = config or load_config(self.settings.config)
        self.keys = Keys(self.settings.namespace)

    def _register_scripts(self, client: Any) -> None:
        """The Lua scripts both clients call, on their own (sync or async) connection."""
        self._enqueue = register(client, Lua.ENQUEUE)
        self._write = register(client, Lua.WRITE_RESULTS)
        self._seal = register(client, Lua.SEAL)
        self._cancel = register(client, Lua.CANCEL)
        self._retry = register(client, Lua.RETRY_FAILED)

    def _route(self, route: Route) -> list[RouteHop]:
        if route is None:
            return self.config.route("default")
        if isinstance(route, str):
            return self.config.route(route)
        return route

    def _builder(
        self,
        batch_id: str,
        route: list[RouteHop],
        window_s: float | None,
        task: Task | None = None,
        lane: str = "",
    ) -> tuple[ChunkBuilder, dict[Any, Any]]:
        deadline = time.time() + window_s if window_s else None
        builder = ChunkBuilder(batch_id, self.keys, self.config, route, deadline, task, lane=lane)
        return builder, new_record(route, deadline=deadline, lane=lane)

    def _open(
        self,
        batch_id: str,
        route: list[RouteHop],
        metadata: dict[str, str] | None,
        window_s: float | None,
        task: Task | None,
        budget_usd: float | None,
        lane: str,
    ) -> tuple[ChunkBuilder, dict[Any, Any]]:
        """The chunk builder and the batch record of a new batch (arguments checked)."""
        if budget_usd is not None and budget_usd <= 0:
            raise ValueError(f"budget_usd must be > 0, got {budget_usd}")
        builder, record = self._builder(batch_id, route, window_s, task, lane)
        if metadata:
            record["metadata"] = orjson.dumps(metadata)
        if budget_usd is not None:
            record["budget_usd"] = budget_usd
        return builder, record

    def _create(self, pipe: Any, batch_id: str, record: dict[Any, Any]) -> Any:
        """Queue on `pipe` (sync or async) the writes that create and index a batch record;
        the index of batches expires with them, so ids older than the result TTL go."""
        pipe.hset(self.keys.batch(batch_id), mapping=record)
        pipe.zadd(self.keys.batches, {batch_id: record["created_at"]})
        pipe.zremrangebyscore(self.keys.batches, "-inf", time.time() - self.settings.result_ttl_s)
        return pipe

    @staticmethod
    def _tally(
        builder: ChunkBuilder, chunk: Chunk, replies: list[Any]
    ) -> tuple[list[tuple[str, LLMResult]], int, int]:
        """From a sent chunk's replies: error results for duplicate ids, enqueued, invalid."""
        dups = replies[0] if chunk.blob else []
        found = builder.duplicates(chunk, dups) if dups else []
        return found, len(chunk.enqueued_ids) - len(dups), len(chunk.errors) + len(dups)

    @staticmethod
    def _report(batch_id: str, lines: int, enqueued: int, invalid: int) -> SubmitReport:
        log.info(
            "batch %s submitted: %d lines, %d enqueued, %d invalid",
            batch_id,
            lines,
            enqueued,
            invalid,
            extra={"batch_id": batch_id},
        )
        return SubmitReport(batch_id, lines, enqueued, invalid)

    def _read_lanes(self, pipe: Any, route: list[RouteHop]) -> Any:
        """Queue on `pipe` (sync or async) the reads `_lane_from` needs: the length of each
        normal lane of the route's first endpoint, then the round-robin turn."""
        endpoint = route[0].endpoint
        for lane in L.NORMAL_LANES:
            pipe.llen(self.keys.queue(L.queue_name(endpoint, lane)))
        pipe.incr(self.keys.lane_turn)
        return pipe

    @staticmethod
    def _lane_from(priority: L.Priority, replies: list[Any]) -> str:
        """The lane `pick_lane` chooses from `_read_lanes`' replies (INCR counts from 1)."""
        *depths, turn = replies
        return L.pick_lane(priority, [int(d) for d in depths], int(turn) - 1)

    def _result_args(self, items: list[tuple[str, LLMResult]]) -> ScriptCall:
        """Script call for line-error results; they also count towards the batch total."""
        items_ = [(k, r, True, b"") for k, r in items]
        return write_call(self.keys, self.settings.result_ttl_s, items_)

    def _enqueue_call(self, batch_id: str, chunk: Chunk) -> ScriptCall:
        return chunk.blob.enqueue_call(self.keys, batch_id, self.settings.result_ttl_s)


@dataclass
class ResultPage:
    """Results read from a batch's stream, and the cursor to continue after them.

    `entries` may be empty while `cursor` moved: results superseded by `retry --failed`
    are skipped.
    """

    entries: list[ResultEntry]
    cursor: str
    read: int


@dataclass(frozen=True)
class FailedRequest:
    """One dead letter, as `failed_requests` lists it."""

    key: str
    code: str
    #: The endpoint kind of the request ("chat", "embeddings", ...).
    kind: str


class Client(_Base):
    """Synchronous client, for scripts and the CLI."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        config: AppConfig | None = None,
    ) -> None:
        super().__init__(redis_url, settings, config)
        assert self.settings.redis_url is not None
        self.redis = redis.Redis.from_url(self.settings.redis_url)
        self._register_scripts(self.redis)

    def close(self) -> None:
        """Close the Redis connections."""
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit_many(
        self,
        items: Iterable[Item],
        *,
        batch_id: str | None = None,
        route: Route = None,
        metadata: dict[str, str] | None = None,
        completion_window_s: float | None = None,
        task: Task | None = None,
        budget_usd: float | None = None,
        priority: L.Priority = "normal",
        endpoint: str | None = None,
    ) -> SubmitReport:
        """Validate and enqueue requests in pipelined chunks; bad lines become error results.

        `endpoint` (an OpenAI batch endpoint such as "/v1/embeddings") makes every line that
        addresses another one an error, as OpenAI's Batch API does.

        `priority` "high" batches are taken before normal ones by every worker, "low" ones only
        when nothing else waits; normal batches sharing an endpoint progress side by side.
        """
        batch_id = batch_id or new_batch_id()
        hops = self._route(route)
        lane = self.lane(priority, hops)
        builder, record = self._open(
            batch_id, hops, metadata, completion_window_s, task, budget_usd, lane
        )
        builder.kinds = kinds_for(endpoint)
        self._create(self.redis.pipeline(transaction=False), batch_id, record).execute()
        lines = enqueued = invalid = 0
        # Build the next chunk while Redis runs the previous one: one I/O thread, one in flight.
        with ThreadPoolExecutor(1, thread_name_prefix="batchyard-submit") as io:
            pending: Future[tuple[int, int]] | None = None
            for part in chunks(numbered(items), self.settings.enqueue_chunk):
                lines += len(part)
                chunk = builder.build(part)
                if pending is not None:
                    ok, bad = pending.result()
                    enqueued, invalid = enqueued + ok, invalid + bad
                pending = io.submit(self._send, builder, chunk)
            if pending is not None:
                ok, bad = pending.result()
                enqueued, invalid = enqueued + ok, invalid + bad
        self._seal(keys=[self.keys.batch(batch_id)], args=[time.time()])
        return self._report(batch_id, lines, enqueued, invalid)

    def lane(self, priority: L.Priority, route: list[RouteHop]) -> str:
        """The queue lane for a new batch (see `workers.protocol.lanes.pick_lane`)."""
        if L.check_priority(priority) != "normal":
            return L.pick_lane(priority, [], 0)
        pipe = self._read_lanes(self.redis.pipeline(transaction=False), route)
        return self._lane_from(priority, pipe.execute())

    def _send(self, builder: ChunkBuilder, chunk: Chunk) -> tuple[int, int]:
        """Enqueue one chunk and record its bad lines; returns (enqueued, invalid)."""
        pipe = self.redis.pipeline(transaction=False)
        if chunk.blob:
            self._enqueue(**self._enqueue_call(builder.batch_id, chunk), client=pipe)
        if chunk.errors:
            self._write(**self._result_args(chunk.errors), client=pipe)
        dups, enqueued, invalid = self._tally(builder, chunk, pipe.execute())
        if dups:
            self._write(**self._result_args(dups))
        return enqueued, invalid

    def submit_file(self, path: Path, **kwargs: Any) -> SubmitReport:
        """Stream a JSONL file of any size into a batch."""
        with path.open("rb") as f:
            return self.submit_many(f, **kwargs)

    def batch(self, batch_id: str) -> Batch:
        """The batch's current record."""
        return parse_record(batch_id, self.redis.hgetall(self.keys.batch(batch_id)))

    def results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> ResultPage:
        """Up to `count` results after the stream id `after`: (stream id, key, result)."""
        raw = self.redis.xread({self.keys.stream(batch_id): after}, count=count, block=block_ms)
        entries, cursor = read_stream(raw, after)
        if not entries:
            return ResultPage([], cursor, 0)
        markers = self.redis.hmget(self.keys.done(batch_id), [k for _, k, _ in entries])
        return ResultPage(current(entries, markers), cursor, len(entries))

    def iter_results(self, batch_id: str, after: str = "0-0") -> Iterator[ResultEntry]:
        """Every current result, in completion order."""
        while (page := self.results(batch_id, after)).read:
            yield from page.entries
            after = page.cursor

    def health(self, endpoints: list[str]) -> dict[str, HealthSnapshot]:
        """Shared health and breaker state of endpoints, as the workers record it."""
        out = {}
        for name in endpoints:
            raw = self.redis.hgetall(self.keys.health(name))
            latencies = self.redis.lrange(self.keys.latency(name), 0, -1)
            window = self.config.endpoints[name].breaker.window_s
            out[name] = read_snapshot(raw, latencies, name, window)
        return out

    def cancel(self, batch_id: str) -> BatchStatus:
        """Cancel a batch: queued requests end `cancelled` unsent, in-flight ones finish."""
        status = self._cancel(keys=[self.keys.batch(batch_id)], args=[time.time()])
        if status is None:
            raise BatchNotFound(batch_id)
        return BatchStatus(status.decode())

    def failures(self, batch_id: str) -> dict[str, list[str]]:
        """Keys of requests that ended in error (dead letters), grouped by error code."""
        out: dict[str, list[str]] = {}
        for failed in self.failed_requests(batch_id):
            out.setdefault(failed.code, []).append(failed.key)
        return out

    def failed_requests(self, batch_id: str) -> list[FailedRequest]:
        """Every request that ended in error: its key, error code and endpoint kind."""
        self.batch(batch_id)
        return [
            FailedRequest(key.decode(), *DeadLetter.code_and_kind_of(dead))
            for key, dead in self.redis.hscan_iter(self.keys.failed(batch_id), count=1000)
        ]

    def retry_failed(self, batch_id: str, *, completion_window_s: float | None = None) -> int:
        """Re-run every failed request of a batch with a fresh attempt budget; returns how many."""
        self.batch(batch_id)
        lane = parse_lane(self.redis.hget(self.keys.batch(batch_id), "lane"))
        builder, _ = self._builder(
            batch_id, self.config.route("default"), completion_window_s, lane=lane
        )
        retried, pending = 0, list(self.redis.hscan_iter(self.keys.failed(batch_id), count=500))
        for start in range(0, len(pending), 500):
            chunk = retry_chunk(builder, pending[start : start + 500])
            retried += int(self._retry(**chunk.blob.retry_call(self.keys, batch_id)))
        return retried

    def wait(self, batch_id: str, timeout_s: float | None = None, poll_s: float = 0.2) -> Batch:
        """Block until the batch finishes (or the timeout passes) and return its record."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            batch = self.batch(batch_id)
            if batch.finished or (deadline is not None and time.monotonic() > deadline):
                return batch
            time.sleep(poll_s)

    def generate_gmn(
        self,
        prompt: str,
        agent_type: str = "general",
        constraints: GMNLimits = None,
        rounds: int = gmn.DEFAULT_ROUNDS,
        **options: Unpack[gmn.GMNOptions],
    ) -> gmn.GMNOutcome:
        """One GMN document, validated and refined in queued rounds; waits (bounded) for it."""
        return gmn.run_one(self, gmn.prompt_job(prompt, agent_type, constraints), rounds, options)

    def refine_gmn(
        self,
        document: gmn.Document,
        errors: list[GMNError] | list[dict[str, Any]] | None = None,
        *,
        prompt: str | None = None,
        agent_type: str = "general",
        constraints: GMNLimits = None,
        feedback: str | None = None,
        rounds: int = gmn.DEFAULT_ROUNDS,
        **options: Unpack[gmn.GMNOptions],
    ) -> gmn.GMNOutcome:
        """Repair an existing document (errors found here when None), optionally changing it."""
        job = gmn.refine_job(
            document,
            errors,
            prompt=prompt,
            agent_type=agent_type,
            constraints=constraints,
            feedback=feedback,
            opts=options,
        )
        return job if isinstance(job, gmn.GMNOutcome) else gmn.run_one(self, job, rounds, options)

    def validate_gmn(
        self, document: gmn.Document, constraints: GMNLimits = None
    ) -> ValidationReport:
        """Validate a document or an LLM reply (and constraints) locally, without any Redis."""
        return gmn.check(document, constraints)

    def generate_gmn_batch(
        self,
        lines: Iterable[Any] | Path,
        *,
        rounds: int = gmn.DEFAULT_ROUNDS,
        completion_window_s: float | None = None,
        **options: Unpack[gmn.GMNOptions],
    ) -> str:
        """Enqueue a prompts file or lines as one GMN batch; bad lines become error entries."""
        return gmn.submit_batch(
            self, lines, rounds=rounds, completion_window_s=completion_window_s, **options
        )


class AsyncClient(_Base):
    """asyncio client, for services that enqueue from an event loop."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        config: AppConfig | None = None,
    ) -> None:
        super().__init__(redis_url, settings, config)
        assert self.settings.redis_url is not None
        self.redis = aioredis.Redis.from_url(self.settings.redis_url)
        self._register_scripts(self.redis)

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit_many(
        self,
        items: Iterable[Item],
        *,
        batch_id: str | None = None,
        route: Route = None,
        metadata: dict[str, str] | None = None,
        completion_window_s: float | None = None,
        task: Task | None = None,
        budget_usd: float | None = None,
        priority: L.Priority = "normal",
        endpoint: str | None = None,
    ) -> SubmitReport:
        """Async twin of `Client.submit_many`."""
        batch_id = batch_id or new_batch_id()
        hops = self._route(route)
        lane = await self.lane(priority, hops)
        builder, record = self._open(
            batch_id, hops, metadata, completion_window_s, task, budget_usd, lane
        )
        builder.kinds = kinds_for(endpoint)
        await self._create(self.redis.pipeline(transaction=False), batch_id, record).execute()
        lines = enqueued = invalid = 0
        pending: asyncio.Task[tuple[int, int]] | None = None
        for part in chunks(numbered(items), self.settings.enqueue_chunk):
            lines += len(part)
            chunk = builder.build(part)
            if pending is not None:
                ok, bad = await pending
                enqueued, invalid = enqueued + ok, invalid + bad
            pending = asyncio.create_task(self._send(builder, chunk))
        if pending is not None:
            ok, bad = await pending
            enqueued, invalid = enqueued + ok, invalid + bad
        await self._seal(keys=[self.keys.batch(batch_id)], args=[time.time()])
        return self._report(batch_id, lines, enqueued, invalid)

    async def lane(self, priority: L.Priority, route: list[RouteHop]) -> str:
        """Async twin of `Client.lane`."""
        if L.check_priority(priority) != "normal":
            return L.pick_lane(priority, [], 0)
        pipe = self._read_lanes(self.redis.pipeline(transaction=False), route)
        return self._lane_from(priority, await pipe.execute())

    async def _send(self, builder: ChunkBuilder, chunk: Chunk) -> tuple[int, int]:
        pipe = self.redis.pipeline(transaction=False)
        if chunk.blob:
            await self._enqueue(**self._enqueue_call(builder.batch_id, chunk), client=pipe)
        if chunk.errors:
            await self._write(**self._result_args(chunk.errors), client=pipe)
        dups, enqueued, invalid = self._tally(builder, chunk, await pipe.execute())
        if dups:
            await self._write(**self._result_args(dups))
        return enqueued, invalid

    async def batch(self, batch_id: str) -> Batch:
        """The batch's current record."""
        return parse_record(batch_id, await self.redis.hgetall(self.keys.batch(batch_id)))

    async def results(
        self, batch_id: str, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> ResultPage:
        """Up to `count` results after the stream id `after`."""
        stream = self.keys.stream(batch_id)
        raw = await self.redis.xread({stream: after}, count=count, block=block_ms)
        entries, cursor = read_stream(raw, after)
        if not entries:
            return ResultPage([], cursor, 0)
        markers = await self.redis.hmget(self.keys.done(batch_id), [k for _, k, _ in entries])
        return ResultPage(current(entries, markers), cursor, len(entries))

    async def iter_results(
        self, batch_id: str, after: str = "0-0", *, follow: bool = False
    ) -> AsyncIterator[ResultEntry]:
        """Current results in completion order; with `follow`, until the batch finishes."""
        while True:
            page = await self.results(batch_id, after, block_ms=1000 if follow else None)
            for entry in page.entries:
                yield entry
            after = page.cursor
            if page.read:
                continue
            if not follow:
                return
            if (await self.batch(batch_id)).finished and not (
                await self.results(batch_id, after)
            ).read:
                return

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Async twin of `Client.cancel`."""
        status = await self._cancel(keys=[self.keys.batch(batch_id)], args=[time.time()])
        if status is None:
            raise BatchNotFound(batch_id)
        return BatchStatus(status.decode())

    async def generate_gmn(
        self,
        prompt: str,
        agent_type: str = "general",
        constraints: GMNLimits = None,
        rounds: int = gmn.DEFAULT_ROUNDS,
        **options: Unpack[gmn.GMNOptions],
    ) -> gmn.GMNOutcome:
        """Async twin of `Client.generate_gmn`."""
        job = gmn.prompt_job(prompt, agent_type, constraints)
        return await gmn.arun_one(self, job, rounds, options)

    async def refine_gmn(
        self,
        document: gmn.Document,
        errors: list[GMNError] | list[dict[str, Any]] | None = None,
        *,
        prompt: str | None = None,
        agent_type: str = "general",
        constraints: GMNLimits = None,
        feedback: str | None = None,
        rounds: int = gmn.DEFAULT_ROUNDS,
        **options: Unpack[gmn.GMNOptions],
    ) -> gmn.GMNOutcome:
        """Async twin of `Client.refine_gmn`."""
        job = gmn.refine_job(
            document,
            errors,
            prompt=prompt,
            agent_type=agent_type,
            constraints=constraints,
            feedback=feedback,
            opts=options,
        )
        if isinstance(job, gmn.GMNOutcome):
            return job
        return await gmn.arun_one(self, job, rounds, options)

    async def validate_gmn(
        self, document: gmn.Document, constraints: GMNLimits = None
    ) -> ValidationReport:
        """Async twin of `Client.validate_gmn` (local, CPU only)."""
        return gmn.check(document, constraints)

    async def generate_gmn_batch(
        self,
        lines: Iterable[Any] | Path,
        *,
        rounds: int = gmn.DEFAULT_ROUNDS,
        completion_window_s: float | None = None,
        **options: Unpack[gmn.GMNOptions],
    ) -> str:
        """Async twin of `Client.generate_gmn_batch`."""
        return await gmn.asubmit_batch(
            self, lines, rounds=rounds, completion_window_s=completion_window_s, **options
        )
