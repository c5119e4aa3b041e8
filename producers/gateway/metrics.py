"""Prometheus metrics of the gateway, in a registry of its own, and the health check."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Request counters and latencies by route template (ids never become labels)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "batchyard_gateway_requests",
            "HTTP requests handled by the gateway.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "batchyard_gateway_request_seconds",
            "Time to produce the response (streamed bodies: until the stream ends).",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "batchyard_gateway_queue_depth",
            "Queued messages over all endpoints, as last seen by the backpressure check.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "batchyard_gateway_rejected",
            "Requests refused by a limit.",
            ("reason",),
            registry=self.registry,
        )

    def middleware(self) -> Middleware:
        """Count and time every request; outermost, so it sees the final status."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                self.requests.labels(request.method, route, str(status)).inc()
                self.latency.labels(request.method, route).observe(time.perf_counter() - started)

        return middleware

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics: the Prometheus text format."""
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
