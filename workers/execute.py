"""The execute actor's body: one queued job -> provider call(s) -> one result or a next hop.

Provider errors end here, as a result or a `Move` (failover or a delayed retry, see
`workers.calls` for the three retry layers); anything else propagates to dramatiq's Retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from opentelemetry.trace import SpanKind

from providers.base import Provider
from providers.errors import ProviderError, Unsupported
from providers.registry import endpoint_options, provider_class
from providers.wire import WirePool
from schemas.config import AppConfig
from schemas.job import Job
from schemas.request import LLMRequest
from schemas.result import Attempt, ErrorInfo, LLMResult, ResultStatus, Timings
from schemas.settings import Settings
from schemas.structured import TASK_KIND as STRUCTURED
from schemas.tokens import prompt_text, request_tokens
from schemas.trusted import assign, trusted
from workers import metrics
from workers.batch_watch import BatchWatch
from workers.calls import call_endpoint
from workers.crashes import FAIL_AT, crashed
from workers.health import EndpointHealth
from workers.outcomes import BatchCancelled, CircuitOpen, Move, cost_of, succeeded
from workers.plugins import CallContext, Plugin, load_plugins
from workers.policy import BACKPRESSURE, backpressure_s, charged, compact, final_error
from workers.protocol.batch_record import BatchState
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.keys import Keys
from workers.ratelimit import Limiter, MustWait
from workers.requeue import Requeuer
from workers.results import FetchCheck, ResultCheck, ResultWriter
from workers.structured import prepare
from workers.tasks import Review, reviewer
from workers.tracing import extract, span, trace_enabled, trace_id_of

if TYPE_CHECKING:
    import aiohttp

    from workers.offload import Offload

log = logging.getLogger("batchyard.worker")
#: `Job.model_validate` without its Python wrapper (~0.5 us of its ~3.8 per message, #22):
#: the same validator, called with the same (default) options.
_validate_job = Job.__pydantic_validator__.validate_python


class Executor:
    """Per-process resources (HTTP session, Redis client, adapters), created on the event loop."""

    def __init__(
        self, settings: Settings, config: AppConfig, concurrency: int, broker: RedisBroker
    ) -> None:
        self.settings = settings
        self.config = config
        self.policy = config.policy
        self.concurrency = concurrency
        self._connections = max(100, concurrency)  # open at once, lean client or aiohttp
        self.broker = broker
        self.keys = Keys(settings.namespace)
        self.providers: dict[str, Provider] = {}
        self.health: dict[str, EndpointHealth] = {}
        self.limiters: dict[str, Limiter] = {}
        self.plugins: list[Plugin] = []
        self._session: aiohttp.ClientSession | None = None
        self._wire: WirePool | None = None
        self._redis: aioredis.Redis | None = None
        self._writer: ResultWriter | None = None
        self._requeuer: Requeuer | None = None
        self._ready: asyncio.Lock | None = None
        self._watch: BatchWatch | None = None
        self.offload: Offload | None = None
        self._checks: ResultCheck | None = None
        #: Results checked by the consumer threads as messages are fetched (`FetchCheck`).
        self.fetch_check: FetchCheck | None = None

    async def _start(self) -> tuple[ResultWriter, Requeuer]:
        if self._writer is None or self._requeuer is None:
            self._ready = self._ready or asyncio.Lock()
            async with self._ready:
                if self._writer is None:
                    self._open()
                    assert self._watch is not None
                    self._watch.start()
        assert self._writer is not None and self._requeuer is not None
        return self._writer, self._requeuer

    def _shared_session(self) -> aiohttp.ClientSession:
        """The process's aiohttp session, made (aiohttp imported) at first use: calls go over
        `providers.wire`, so most workers never need one (its import cost ~80 ms, #22)."""
        if self._session is None:
            from workers.lean_aiohttp import import_aiohttp

            import_aiohttp()  # aiohttp without reading CA certificates at import
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _open(self) -> None:
        self._wire = WirePool(self._connections)
        assert self.settings.redis_url is not None
        pool = aioredis.BlockingConnectionPool.from_url(
            self.settings.redis_url, max_connections=64, timeout=30
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._watch = BatchWatch(self._redis, self.keys, self.settings.cancel_poll_s)
        if self.fetch_check is not None:  # fetches read batch states with their checks
            self.fetch_check.watch = self._watch
        for name, cfg in self.config.endpoints.items():
            cls = provider_class(cfg.provider)
            provider = cls(name, cfg, endpoint_options(name, cfg))
            provider.sessions = self._shared_session
            if hasattr(provider, "wire"):  # an HTTPProvider (not imported: the mock is not one)
                provider.wire = self._wire
            self.providers[name] = provider
            self.health[name] = EndpointHealth(self._redis, self.keys.ns, name, cfg.breaker)
            self.limiters[name] = Limiter(
                self._redis, self.keys.ns, name, cfg, learning=cls.announces_limits
            )
        self._requeuer = Requeuer(self._redis, self.broker)
        self.plugins = load_plugins(self.config.plugins, self._redis, self.keys.ns)
        self._writer = ResultWriter(self._redis, self.keys, self.settings.result_ttl_s)
        if not any(cfg.offloaded for cfg in self.config.endpoints.values()):
            return
        # Here, not at the top: it imports the OpenAI and Anthropic adapters and their
        # translations, which a worker with no `mode: batch` endpoint may never use (#22).
        from workers.offload import Offload, batch_endpoints

        offloaded = batch_endpoints(self.config.endpoints, self.providers)
        if offloaded:
            writer, requeuer = self._writer, self._requeuer

            async def write(key: str, result: LLMResult) -> bool:
                return await writer.write(key, result)

            self.offload = Offload(
                self._redis, self.keys.ns, offloaded, write, requeuer.enqueue, succeeded
            )

    async def start(self) -> None:
        """At boot: connect, listen for cancels, read the breakers' states (`warm`), and poll
        this process's share of open vendor batches (they outlive workers)."""
        await self._start()
        warmed = await asyncio.gather(
            *(h.warm() for h in self.health.values()), return_exceptions=True
        )
        for health, failed in zip(self.health.values(), warmed, strict=True):
            if isinstance(failed, Exception):  # its first request reads it, as before
                log.debug("breaker state of %s not read at start: %s", health.endpoint, failed)
        if self.offload is not None:
            self.offload.start()

    def cancelled(self, batch_id: str) -> bool:
        """Whether the batch is known cancelled, without a Redis read (`BatchWatch`)."""
        return self._watch is not None and self._watch.cancelled(batch_id)

    async def aclose(self) -> None:
        """Flush health counters, close adapters, the shared session and the Redis pool."""
        if self.offload is not None:
            await self.offload.aclose()
        if self._watch is not None:
            await self._watch.aclose()
        for health in self.health.values():
            try:
                await health.flush()
            except Exception as exc:
                log.warning("could not flush health of %s: %s", health.endpoint, exc)
        for limiter in self.limiters.values():  # their last releases, before Redis closes
            await limiter.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        if self._wire is not None:
            self._wire.close()
        if self._session is not None:
            await self._session.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def run(self, payload: dict[str, Any]) -> None:
        """Execute one message: store its result, or queue its next hop. Infra errors propagate."""
        writer, requeuer = self._writer, self._requeuer
        if writer is None or requeuer is None:  # only the first messages: no await after
            writer, requeuer = await self._start()
        job: Job = _validate_job(payload)
        started = time.time()
        if await self._has_result(job):
            # A redelivery (a worker killed before its ack, a Redis restart, a resumed run):
            # the result is stored, so the provider is not paid again.
            log.info(
                "redelivered request already has a result; not calling the provider",
                extra={"batch_id": job.batch_id, "custom_id": job.key},
            )
            return
        if (
            self.offload is not None
            and self.offload.handles(job)
            and await self._precheck(job, started) is None  # else ended below, unsent
        ):
            await self.offload.park(job)  # sent with the endpoint's next vendor batch
            return
        hop = job.current
        with span(
            f"process llm.{hop.endpoint}",
            context=extract(job.trace) if trace_enabled() else None,
            kind=SpanKind.CONSUMER,
            attributes=lambda: {  # built only when tracing records
                "messaging.system": "redis",
                "batchyard.batch_id": job.batch_id,
                "batchyard.custom_id": job.key,
                "batchyard.hop": job.hop,
            },
        ):
            result: LLMResult | Move
            if job.deaths >= FAIL_AT:  # its worker died each time it ran (`workers.crashes`)
                result = self._final(job, "errored", crashed(job.deaths))
            else:
                result = await self._execute(job, started)
        trace_id = trace_id_of(job.trace)
        context = {"batch_id": job.batch_id, "custom_id": job.key, "trace_id": trace_id}
        if isinstance(result, Move):
            await requeuer.enqueue(job, delay_ms=result.delay_ms)
            log.debug(
                "job moved to %s (delay %d ms)",
                job.current.endpoint,
                result.delay_ms,
                extra={**context, "endpoint": hop.endpoint},
            )
            return
        if job.task is not None and result.status == "succeeded":
            review = self._review(job, result)
            if review.next_request is not None:
                nxt = self._next_round(
                    job, review.next_request, review.rotate_route, review.same_round
                )
                await requeuer.enqueue(nxt)
                log.debug(
                    "job queued for task round %d",
                    job.task.round + 1,
                    extra={**context, "endpoint": hop.endpoint},
                )
                return
            result = review.result or result
        # Three floats of ours: not validated, nor set by pydantic's __setattr__ (1 us, #22).
        times = {"enqueued_at": job.enqueued_at, "started_at": started, "finished_at": time.time()}
        assign(result, trace_id=trace_id, timings=trusted(Timings, times, set(times)))
        dead = b""
        if result.status in ("errored", "expired") and result.error is not None:
            dead = DeadLetter.of(job, result.status, result.error.code)
        context["endpoint"] = result.endpoint
        if await writer.write(job.key, result, dead):
            if metrics.RECORDING:
                metrics.labeled(metrics.JOBS, result.endpoint or "", result.status).inc()
            log.debug("job %s", result.status, extra=context)
        else:
            log.info("duplicate delivery ignored: the result was already stored", extra=context)

    async def _has_result(self, job: Job) -> bool:
        """True when (batch, key) already has its result (checked before any call)."""
        if self.fetch_check is not None and self.fetch_check.absent(job.batch_id, job.key):
            return False  # checked as it was fetched
        if self._checks is None:
            assert self._redis is not None
            self._checks = ResultCheck(self._redis, self.keys)
        return await self._checks.has(job.batch_id, job.key)

    def _review(self, job: Job, result: LLMResult) -> Review:
        assert job.task is not None
        review = reviewer(job.task.kind)
        if review is None:
            result.status = "errored"
            result.error = ErrorInfo(
                code="unknown_task",
                message=f"no reviewer for task {job.task.kind!r} is installed on this worker",
            )
            return Review(result=result)
        return review(job, result)

    @staticmethod
    def _next_round(job: Job, request: LLMRequest, rotate: int = 0, same: bool = False) -> Job:
        """A follow-up round is a normal job: first hop (of a rotated route), fresh attempts."""
        assert job.task is not None
        task = job.task.model_copy(update={"round": job.task.round + (0 if same else 1)})
        shift = rotate % len(job.route)
        route = job.route[shift:] + job.route[:shift]
        fresh = {"hop": 0, "attempts": [], "deaths": 0}  # deaths: `workers.crashes`
        return job.model_copy(update={"request": request, "route": route, "task": task, **fresh})

    async def _execute(self, job: Job, started: float) -> LLMResult | Move:
        """The result, or a `Move` (job.hop and job.attempts are updated in place)."""
        assert self._watch is not None
        state = self._watch.fresh(job.batch_id)  # most requests: no coroutine to read it
        if state is None:
            stop = await self._precheck(job, started)
        else:
            stop = self._stop(job, started, state)
        if stop is not None:
            return stop
        hop = job.current
        provider = self.providers.get(hop.endpoint)
        if provider is None:
            message = f"endpoint {hop.endpoint!r} is not configured on this worker"
            return self._final(job, "errored", ErrorInfo(code="unknown_endpoint", message=message))
        req, cfg = job.request, provider.settings
        if job.task is not None and job.task.kind == STRUCTURED:
            req = prepare(req, job.task, cfg, provider.capabilities)
        tier = hop.tier or req.tier
        rule = self.config.tier_rule
        if tier is None and rule is not None and not (hop.model or req.model):
            tier = rule.pick(prompt_text(req))
        # The body's own model names a model of its vendor: it wins over the endpoint's
        # default there, and only stands in for a missing one where the request is translated.
        own = None if provider.translates(req) else req.model
        model = hop.model or own or cfg.model_for(tier) or req.model
        model = model or provider.default_model()
        limit = cfg.max_context_tokens or provider.capabilities.max_context_tokens
        needed = request_tokens(req)
        if needed > limit:
            msg = f"~{needed} tokens needed, {hop.endpoint} takes {limit}"
            return self._fail(job, ProviderError(msg), "context_too_long", model)
        why = provider.unsupported(req)
        if why is not None:
            return self._fail(job, Unsupported(why), "unsupported", model)
        ctx = CallContext(hop.endpoint, model, req)
        cached = None
        for plugin in self.plugins:
            cached = await plugin.before_call(ctx)
            if cached is not None:
                job.attempts.append(Attempt(endpoint=hop.endpoint, model=cached.model))
                break
        try:
            resp = cached or await call_endpoint(
                job,
                provider,
                model,
                ctx.request,
                health=self.health[hop.endpoint],
                limiter=self.limiters[hop.endpoint],
                policy=self.policy,
                cancelled=lambda: self.cancelled(job.batch_id),
                tokens=needed if ctx.request is req else None,
            )
        except BaseException as exc:
            for plugin in self.plugins:
                await plugin.call_failed(ctx)
            if isinstance(exc, MustWait):
                return self._wait(job, exc.delay_s, self._limited(exc.delay_s), model)
            if isinstance(exc, BatchCancelled):
                why = "the batch was cancelled before this request was sent"
                error = ErrorInfo(code="batch_cancelled", message=why)
                return self._final(job, "cancelled", error)
            if isinstance(exc, CircuitOpen):
                return self._fail(job, exc, exc.code, model)
            if isinstance(exc, ProviderError):
                return self._fail(job, exc, exc.code, model)
            raise
        if cached is None:
            for plugin in reversed(self.plugins):
                resp = await plugin.after_call(ctx, resp)
        # Most endpoints have no price table: then nothing is priced, and nothing looked up.
        price = (cfg.price_for(resp.model) or cfg.price_for(model)) if cfg.prices else None
        cost = 0.0 if cached else cost_of(price, resp)
        result = succeeded(job, req, resp, cost)
        if cached:
            result.extra = {"cache": "hit"}
        return result

    async def _precheck(self, job: Job, started: float) -> LLMResult | None:
        """End a request unsent when its batch is out of time, cancelled or out of budget."""
        assert self._watch is not None
        ended = _window_ended(job, started)
        return self._stop(job, started, None if ended else await self._watch.state(job.batch_id))

    def _stop(self, job: Job, started: float, state: BatchState | None) -> LLMResult | None:
        """`_precheck` with the batch's state read (None: not needed, its window has ended)."""
        if _window_ended(job, started):
            last = job.attempts[-1].error if job.attempts else None
            if last in BACKPRESSURE:  # it was refused, waited, and ran out of window
                why = f"{last} until the batch's completion window ended"
                return self._final(job, "errored", ErrorInfo(code=last, message=why))
            why = "the batch's completion window ended before it was sent"
            return self._final(job, "expired", ErrorInfo(code="batch_expired", message=why))
        assert state is not None and self._watch is not None
        if self._watch.published(job.batch_id) or state.status in ("cancelling", "cancelled"):
            why = "the batch was cancelled before this request was sent"
            return self._final(job, "cancelled", ErrorInfo(code="batch_cancelled", message=why))
        if state.budget_usd is not None and state.cost_usd >= state.budget_usd:
            why = (
                f"the batch's budget of ${state.budget_usd:g} is spent "
                f"(${state.cost_usd:.4f}); request not sent"
            )
            return self._final(job, "errored", ErrorInfo(code="budget_exceeded", message=why))
        return None

    def _fail(self, job: Job, exc: ProviderError, code: str, model: str) -> LLMResult | Move:
        """Move the job to its next hop, or wait out backpressure, or give the final error."""
        if code in ("context_too_long", "circuit_open", "unsupported"):  # no call was made
            job.attempts.append(Attempt(endpoint=job.current.endpoint, model=model, error=code))
        error = ErrorInfo(code=code, message=exc.message, status=exc.status, body=exc.body)
        if self.policy.action(code) == "fail":
            return self._final(job, "errored", error)
        if code in BACKPRESSURE:
            compact(job.attempts)
            if job.hop + 1 < len(job.route):
                return self._failover(job)
            return self._wait(job, backpressure_s(self.policy, job.attempts, exc), error, model)
        if charged(job.attempts) >= self.policy.max_attempts:
            return self._final(job, "errored", error)
        if job.hop + 1 < len(job.route):
            return self._failover(job)
        return self._final(job, "errored", error)

    @staticmethod
    def _failover(job: Job) -> Move:
        metrics.labeled(metrics.FAILOVERS, job.current.endpoint).inc()
        job.hop += 1
        return Move()

    def _wait(self, job: Job, delay_s: float, error: ErrorInfo, model: str) -> LLMResult | Move:
        """Backpressure is not failure: try again after `delay_s`, unless the request's
        deadline (its batch's window, else `policy.max_backpressure_s`) comes first."""
        end = job.deadline
        if end is None:
            end = job.enqueued_at + self.policy.max_backpressure_s
        if time.time() + delay_s >= end:
            if not job.attempts or job.attempts[-1].error != error.code:
                job.attempts.append(Attempt(endpoint=job.current.endpoint, model=model))
                job.attempts[-1].error = error.code
            why = f"{error.message}; waiting {delay_s:.1f}s more would pass the request's deadline"
            return self._final(job, "errored", error.model_copy(update={"message": why}))
        return Move(delay_ms=int(max(delay_s, 0.05) * 1000))

    @staticmethod
    def _limited(delay_s: float) -> ErrorInfo:
        message = f"the endpoint's rate limit has no capacity for {delay_s:.1f}s"
        return ErrorInfo(code="rate_limited", message=message)

    def _final(self, job: Job, status: ResultStatus, error: ErrorInfo) -> LLMResult:
        hop = job.current
        return LLMResult(
            custom_id=job.request.custom_id,
            batch_id=job.batch_id,
            status=status,
            kind=job.request.kind,
            endpoint=hop.endpoint,
            attempts=job.attempts,
            error=final_error(job.attempts, error),
            model=job.attempts[-1].model if job.attempts else None,
        )


def _window_ended(job: Job, started: float) -> bool:
    """Whether the batch's completion window had ended when the request started."""
    return job.deadline is not None and started > job.deadline


class ExecutorLifecycle(Middleware):
    """Closes the executor's resources on its own loop, after in-flight jobs have finished.

    Added after `AsyncIOLoop`: dramatiq runs `after_*` hooks in reverse order, so this one
    runs while the loop is still alive.
    """

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        """Start the executor on the loop (started by `AsyncIOLoop`'s hook, which runs first)
        before any consumer fetches: connect and listen for cancels (a cancel then stops
        calls at once), build adapters and plugins, poll offloaded batches. If it fails, the
        worker starts no consumer (`LoopWorker._add_consumer`): its jobs could not run."""
        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(self.executor.start())

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Stopping: requests waiting for admission go back unsent (`Limiter.drain`)."""
        thread = get_event_loop_thread()
        if thread is not None and thread.loop.is_running():
            for limiter in self.executor.limiters.values():
                thread.loop.call_soon_threadsafe(limiter.drain)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        thread = get_event_loop_thread()
        if thread is not None and thread.loop.is_running():
            thread.run_coroutine(self.executor.aclose())
