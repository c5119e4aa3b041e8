"""Batch offload: `mode: batch` endpoints send their requests through the vendor's Batch API.

Workers park each such job in a Redis list per endpoint instead of calling live. In every
worker process a background loop, for each batch-mode endpoint whose lease it holds (one
process at a time; the lease expires if its holder dies and another takes it):

- flushes the parked jobs into a vendor batch once `max_requests` or `max_bytes` are reached
  or the oldest has waited `max_wait_s`, and records the vendor batch in Redis
  (`offload:vb:<vendor id>`: its jobs in order; line i has custom_id `q<i>`, so custom_ids
  never collide between vendor batches);
- polls the open vendor batches every `poll_s`; a finished one has each line's answer written
  through the same exactly-once result write as live calls, priced at `discount`; lines the
  vendor failed, expired or cancelled move to the next (live) hop of their route;
- cancels a vendor batch not over by its earliest request's deadline minus the fall back
  margin, then collects what it finished and sends the rest to the next hop.

Keys: `Keys.offload` (per endpoint: pending jobs, lease, open vendor batches) and
`Keys.vendor_batch` (one vendor batch's record).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from multidict import CIMultiDict, CIMultiDictProxy

from providers.anthropic import AnthropicProvider
from providers.base import ProviderResponse
from providers.errors import ProviderError
from providers.http_response import HTTPResponse
from providers.openai import OpenAIProvider
from schemas.config import BatchConfig, EndpointConfig
from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import Attempt, ErrorInfo, LLMResult, Timings
from workers.background import cancel_and_wait
from workers.offload_vendor import BatchAdapter, Line, VendorBatchAPI
from workers.outcomes import cost_of
from workers.protocol.keys import Keys

log = logging.getLogger("batchyard.offload")

#: Writes one result exactly once; False when the request already had one.
Write = Callable[[str, LLMResult], Awaitable[bool]]
#: The live path's result of an answer (`workers.outcomes.succeeded`).
Succeeded = Callable[[Job, LLMRequest, ProviderResponse, float | None], LLMResult]
#: Queues a job for its current hop.
Enqueue = Callable[[Job], Awaitable[None]]

#: Adapters whose vendors have a batch API.
BATCH_ADAPTERS = (OpenAIProvider, AnthropicProvider)

#: Fall back margin when the config sets none: 25% of the window, at least this.
MIN_MARGIN_S = 600.0
#: A window for requests whose batch has none (the vendors' 24 h).
DEFAULT_WINDOW_S = 86_400.0


def margin_s(cfg: BatchConfig, job: Job) -> float:
    """How long before the job's deadline its vendor batch is given up."""
    if cfg.fallback_margin_s is not None:
        return cfg.fallback_margin_s
    window = (job.deadline - job.enqueued_at) if job.deadline else DEFAULT_WINDOW_S
    return max(0.25 * window, MIN_MARGIN_S)


class Offload:
    """Parks, flushes and polls the vendor batches of this process's batch-mode endpoints."""

    def __init__(
        self,
        redis: aioredis.Redis,
        ns: str,
        endpoints: dict[str, tuple[EndpointConfig, BatchAdapter]],
        write: Write,
        enqueue: Enqueue,
        succeeded: Succeeded,
    ) -> None:
        self.redis = redis
        self.keys = Keys(ns)
        self.endpoints = endpoints
        self.write = write
        self.enqueue = enqueue
        self.succeeded = succeeded
        self.token = secrets.token_hex(8)
        self._polled: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def handles(self, job: Job) -> bool:
        """True when the job's current hop is a batch-mode endpoint."""
        return job.current.endpoint in self.endpoints

    async def park(self, job: Job) -> None:
        """Hold the job for the endpoint's next vendor batch (durable in Redis)."""
        endpoint = job.current.endpoint
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.keys.offload(endpoint, "pending"), job.model_dump_json())
            pipe.set(self.keys.offload(endpoint, "since"), time.time(), nx=True)
            await pipe.execute()
        self.start()

    def start(self) -> None:
        """Run the flush-and-poll loop on this event loop (once per process)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        tick = min(1.0, *(cfg.batch.poll_s for cfg, _ in self.endpoints.values()))
        while True:
            for endpoint in self.endpoints:
                try:
                    if await self._lease(endpoint):
                        await self.tick(endpoint)
                except Exception as exc:  # a vendor or Redis hiccup: try again next tick
                    log.warning("offload of %s: %s", endpoint, exc, extra={"endpoint": endpoint})
            await asyncio.sleep(tick)

    async def _lease(self, endpoint: str) -> bool:
        cfg = self.endpoints[endpoint][0].batch
        key, ttl = self.keys.offload(endpoint, "lease"), int(cfg.lease_s * 1000)
        if await self.redis.set(key, self.token, nx=True, px=ttl):
            return True
        holder = await self.redis.get(key)
        if holder is not None and holder == self.token.encode():
            await self.redis.pexpire(key, ttl)
            return True
        return False

    async def tick(self, endpoint: str) -> None:
        """Flush what is due, poll what is due (lease held)."""
        await self.flush(endpoint)
        cfg = self.endpoints[endpoint][0].batch
        now = time.time()
        if now - self._polled.get(endpoint, 0.0) >= cfg.poll_s:
            self._polled[endpoint] = now
            for raw in await self.redis.smembers(self.keys.offload(endpoint, "open")):
                await self.poll(endpoint, raw.decode() if isinstance(raw, bytes) else raw)

    async def flush(self, endpoint: str, force: bool = False) -> str | None:
        """Create a vendor batch from the parked jobs when one is due; its vendor id."""
        cfg, provider = self.endpoints[endpoint]
        pending = self.keys.offload(endpoint, "pending")
        since = await self.redis.get(self.keys.offload(endpoint, "since"))
        count = await self.redis.llen(pending)
        if count == 0:
            return None
        waited = time.time() - float(since) if since else 0.0
        if not force and count < cfg.batch.max_requests and waited < cfg.batch.max_wait_s:
            return None
        raws = await self.redis.lrange(pending, 0, cfg.batch.max_requests - 1)
        jobs: list[bytes] = []
        lines: list[tuple[str, dict[str, Any]]] = []
        size = 0
        kind = None
        for raw in raws:
            job = Job.model_validate_json(raw)
            req = job.request
            body = provider.body(req, self._model(job, cfg, provider))
            size += len(orjson.dumps(body)) + 100
            if jobs and (size > cfg.batch.max_bytes or (kind is not None and req.kind != kind)):
                break  # one endpoint kind per OpenAI file; the rest go in the next batch
            kind = req.kind
            lines.append((f"q{len(jobs)}", body))
            jobs.append(raw if isinstance(raw, bytes) else raw.encode())
        assert kind is not None
        api = VendorBatchAPI(provider)
        vendor_id = await api.create(kind, lines)
        deadline = min(
            (j.deadline or j.enqueued_at + DEFAULT_WINDOW_S) - margin_s(cfg.batch, j)
            for j in (Job.model_validate_json(r) for r in jobs)
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.vendor_batch(vendor_id),
                mapping={
                    "endpoint": endpoint,
                    "jobs": orjson.dumps([orjson.loads(r) for r in jobs]),
                    "created": time.time(),
                    "fallback_at": deadline,
                    "state": "open",
                },
            )
            pipe.sadd(self.keys.offload(endpoint, "open"), vendor_id)
            pipe.ltrim(pending, len(jobs), -1)
            pipe.delete(self.keys.offload(endpoint, "since"))
            await pipe.execute()
        if count > len(jobs):
            await self.redis.set(self.keys.offload(endpoint, "since"), time.time(), nx=True)
        log.info(
            "vendor batch %s created with %d requests",
            vendor_id,
            len(jobs),
            extra={"endpoint": endpoint},
        )
        return vendor_id

    @staticmethod
    def _model(job: Job, cfg: EndpointConfig, provider: BatchAdapter) -> str:
        hop, req = job.current, job.request
        own = None if provider.translates(req) else req.model
        tier = hop.tier or req.tier
        return hop.model or own or cfg.model_for(tier) or req.model or provider.default_model()

    async def poll(self, endpoint: str, vendor_id: str) -> None:
        """Read one open vendor batch; collect it when over, cancel it when out of time."""
        cfg, provider = self.endpoints[endpoint]
        record = await self.redis.hgetall(self.keys.vendor_batch(vendor_id))
        if not record:
            await self.redis.srem(self.keys.offload(endpoint, "open"), vendor_id)
            return
        api = VendorBatchAPI(provider)
        status = await api.status(vendor_id)
        if not status.over:
            late = time.time() >= float(record[b"fallback_at"])
            if record[b"state"] == b"open" and (late or await self._all_cancelled(record)):
                await api.cancel(vendor_id)
                await self.redis.hset(self.keys.vendor_batch(vendor_id), "state", "cancelling")
                why = "out of time" if late else "its batches were cancelled"
                log.info("vendor batch %s cancelled: %s", vendor_id, why)
                status = await api.status(vendor_id)
            if not status.over:
                return
        lines = await api.results(status)
        jobs = [Job.model_validate(j) for j in orjson.loads(record[b"jobs"])]
        for i, job in enumerate(jobs):
            line = lines.get(f"q{i}") or Line(error=f"batch_{status.status}")
            await self._settle(job, line, cfg, provider, vendor_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.offload(endpoint, "open"), vendor_id)
            pipe.delete(self.keys.vendor_batch(vendor_id))
            await pipe.execute()
        log.info("vendor batch %s collected (%s)", vendor_id, status.status)

    async def _all_cancelled(self, record: dict[bytes | str, bytes | str]) -> bool:
        """True when every batchyard batch with a request in this vendor batch is cancelled."""
        ids = {j["batch_id"] for j in orjson.loads(record[b"jobs"])}
        for batch_id in ids:
            status = await self.redis.hget(self.keys.batch(batch_id), "status")
            if status not in (b"cancelling", b"cancelled"):
                return False
        return True

    async def _settle(
        self,
        job: Job,
        line: Line,
        cfg: EndpointConfig,
        provider: BatchAdapter,
        vendor_id: str,
    ) -> None:
        endpoint = job.current.endpoint
        model = self._model(job, cfg, provider)
        if line.body is not None:
            resp = HTTPResponse(200, CIMultiDictProxy(CIMultiDict()), orjson.dumps(line.body))
            try:
                answer = provider.answer(job.request, resp, model)
            except ProviderError as exc:
                line = Line(error=exc.code)
            else:
                live = cost_of(cfg.price_for(answer.model) or cfg.price_for(model), answer)
                cost = None if live is None else live * cfg.batch.discount
                job.attempts.append(Attempt(endpoint=endpoint, model=answer.model))
                result = self.succeeded(job, job.request, answer, cost)
                result.extra = {"vendor_batch": vendor_id, "batch_discount": cfg.batch.discount}
                if live is not None:
                    result.extra["saved_usd"] = live - (cost or 0.0)
                result.timings = Timings(
                    enqueued_at=job.enqueued_at, started_at=job.enqueued_at, finished_at=time.time()
                )
                if not await self.write(job.key, result):
                    # Answered meanwhile (e.g. live after a fall back): this answer is dropped,
                    # but the vendor charged for it.
                    log.info(
                        "late vendor answer superseded (cost %s USD)",
                        cost,
                        extra={"batch_id": job.batch_id, "custom_id": job.key},
                    )
                return
        error = line.error or "batch_failed"
        job.attempts.append(Attempt(endpoint=endpoint, model=model, error=error))
        if job.hop + 1 < len(job.route):
            job.hop += 1
            await self.enqueue(job)
            return
        result = LLMResult(
            custom_id=job.request.custom_id,
            batch_id=job.batch_id,
            status="errored",
            kind=job.request.kind,
            endpoint=endpoint,
            error=ErrorInfo(code=error, message=f"vendor batch {vendor_id}: {error}"),
            attempts=job.attempts,
        )
        await self.write(job.key, result)


def batch_endpoints(
    endpoints: dict[str, EndpointConfig], providers: dict[str, Any]
) -> dict[str, tuple[EndpointConfig, BatchAdapter]]:
    """The `mode: batch` endpoints with their adapters."""
    return {
        name: (cfg, providers[name])
        for name, cfg in endpoints.items()
        if cfg.offloaded and isinstance(providers.get(name), (OpenAIProvider, AnthropicProvider))
    }
