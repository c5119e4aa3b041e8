"""Limits that protect the gateway and the queues: per-key request rate, queue-depth
backpressure, and the 413 errors of uploads that are too big."""

from __future__ import annotations

import asyncio
import math
import time

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from producers.gateway.auth import PRINCIPAL
from producers.gateway.config import GatewayConfig
from producers.gateway.errors import ApiError
from producers.gateway.metrics import Metrics
from schemas.config import AppConfig
from workers.protocol.gateway import GatewayKeys
from workers.protocol.keys import Keys
from workers.protocol.lanes import endpoint_queues
from workers.protocol.scripts import Lua, register

RATE_LIMIT = "rate_limit_error"


class RateLimiter:
    """Requests per minute per API key over a sliding 60 s (GCRA), shared by every gateway
    through Redis: a burst of up to `rpm`, then one request every 60/rpm s. A fixed clock
    minute let twice the limit through around each minute boundary."""

    WINDOW_MS = 60_000

    def __init__(
        self, redis: aioredis.Redis, keys: GatewayKeys, config: GatewayConfig, metrics: Metrics
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.default_rpm = config.rate_per_min
        self.metrics = metrics
        self._admit = register(redis, Lua.RATE_ADMIT)

    def middleware(self) -> Middleware:
        """429 with Retry-After once a key is over its rate; runs after authentication."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            key = request.get(PRINCIPAL)
            if key is not None:
                await self.check(key.name, key.rate_per_min or self.default_rpm)
            return await handler(request)

        return middleware

    async def check(self, key_name: str, rpm: int) -> None:
        """Count one request; raise 429 when over `rpm` in the last 60 s (0 means unlimited)."""
        if rpm <= 0:
            return
        now_ms = time.time() * 1000
        interval_ms = self.WINDOW_MS / rpm
        wait_ms = await self._admit(
            keys=[self.keys.rate(key_name)], args=[now_ms, interval_ms, self.WINDOW_MS]
        )
        if int(wait_ms) > 0:
            raise refused(
                self.metrics,
                "rate",
                f"Rate limit reached for key {key_name!r}: {rpm} requests per minute.",
                "rate_limit_exceeded",
                max(1, math.ceil(int(wait_ms) / 1000)),
            )


class Backpressure:
    """Refuses new work while the endpoint queues hold more than `max_queue_depth` messages."""

    #: Seconds a measured depth is reused: the check stays off Redis on busy gateways.
    CACHE_S = 1.0

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        app_config: AppConfig,
        config: GatewayConfig,
        metrics: Metrics,
    ) -> None:
        self.redis = redis
        self.max_depth = config.max_queue_depth
        self.retry_after_s = config.retry_after_s
        self.metrics = metrics
        self._hashes = [
            keys.queue_msgs(q)
            for endpoint in app_config.endpoints
            for lane in endpoint_queues(endpoint)
            for q in (lane, lane + ".DQ")
        ]
        self._depth = 0
        self._measured_at = -math.inf
        self._lock = asyncio.Lock()

    async def depth(self) -> int:
        """Messages waiting or in flight on every configured endpoint's queue (and its delays)."""
        async with self._lock:
            if time.monotonic() - self._measured_at > self.CACHE_S:
                pipe = self.redis.pipeline(transaction=False)
                for name in self._hashes:
                    pipe.hlen(name)
                self._depth = sum(int(n) for n in await pipe.execute())
                self._measured_at = time.monotonic()
                self.metrics.queue_depth.set(self._depth)
        return self._depth

    async def check(self) -> None:
        """Raise 429 with Retry-After when the queues are over the threshold."""
        if self.max_depth <= 0:
            return
        depth = await self.depth()
        if depth > self.max_depth:
            raise refused(
                self.metrics,
                "queue_full",
                f"The queues hold {depth} requests (limit {self.max_depth}); retry later.",
                "queue_full",
                self.retry_after_s,
            )


def refused(metrics: Metrics, reason: str, message: str, code: str, retry_after_s: int) -> ApiError:
    """429 with Retry-After, counted under `reason` in the rejected-requests metric."""
    metrics.rejected.labels(reason).inc()
    return ApiError(
        429, message, type=RATE_LIMIT, code=code, headers={"Retry-After": str(retry_after_s)}
    )


def too_large(what: str, limit: str) -> ApiError:
    """413 for an upload over a limit."""
    return ApiError(
        413, f"{what} exceeds the limit of {limit}.", param="file", code="file_too_large"
    )
