"""The gateway's aiohttp application: middlewares, routes and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis
from aiohttp import web

from producers.gateway import batches, dashboard, events, files, jobs, login
from producers.gateway.auth import auth_middleware
from producers.gateway.config import GatewayConfig
from producers.gateway.deadlines import body_deadline_middleware
from producers.gateway.errors import errors_middleware
from producers.gateway.state import GATEWAY, Gateway, gateway
from schemas.config import AppConfig
from schemas.settings import Settings
from workers.tracing import flush_tracing, setup_tracing

log = logging.getLogger("batchyard.gateway")

#: How often a gateway looks for batches another (dead) gateway was ingesting.
RECOVER_EVERY_S = 30.0
#: How often orphaned files are removed from the storage directory.
SWEEP_EVERY_S = 600.0


async def healthz(request: web.Request) -> web.Response:
    """200 while Redis answers, 503 otherwise: for load balancers and process managers."""
    try:
        await gateway(request).redis.ping()
    except (redis.RedisError, OSError) as exc:
        return web.json_response({"status": "unavailable", "detail": str(exc)}, status=503)
    return web.json_response({"status": "ok"})


async def _maintain(gw: Gateway, stop: asyncio.Event) -> None:
    """Recover interrupted ingestions and sweep orphaned files until `stop` is set.

    Stopping is an event, not a cancellation: a cancel that lands inside a Redis call can
    come out as a Redis error (Python 3.11's `asyncio.timeout` can turn it into a timeout),
    which the loop below would log and sleep through.
    """
    since_sweep = SWEEP_EVERY_S
    while not stop.is_set():
        try:
            await gw.ingest.recover()
            if since_sweep >= SWEEP_EVERY_S:
                await gw.store.sweep()
                since_sweep = 0.0
        except (redis.RedisError, OSError) as exc:
            log.warning("gateway maintenance failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RECOVER_EVERY_S)
        since_sweep += RECOVER_EVERY_S


def create_app(
    settings: Settings, app_config: AppConfig, config: GatewayConfig, *, grace_s: float = 30.0
) -> web.Application:
    """Build the app; Redis is first contacted when it starts. Traces from the OTEL_*
    environment (`setup_tracing`) whichever way the app is served."""
    setup_tracing("batchyard-gateway")
    gw = Gateway.build(settings, app_config, config)
    app = web.Application(
        middlewares=[
            body_deadline_middleware(
                config.body_idle_timeout_s, config.body_total_timeout_s, gw.closing
            ),
            gw.metrics.middleware(),
            errors_middleware,
            auth_middleware(gw.ring, gw.sessions),
            gw.rate.middleware(),
        ],
        client_max_size=config.max_request_kib * 1024,
    )
    app[GATEWAY] = gw
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", gw.metrics.handle)
    for table in (
        files.routes,
        batches.routes,
        events.routes,
        jobs.routes,
        login.routes,
        dashboard.routes,
    ):
        app.router.add_routes(table)
    dashboard.setup(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if not gw.ring:
            log.warning("no API keys configured: every /v1 request will get 401")
        stop = asyncio.Event()
        maintenance = asyncio.create_task(_maintain(gw, stop), name="gateway maintenance")
        yield
        stop.set()
        # One round of recover/sweep is short; a Redis that stopped answering is not waited on.
        if not (await asyncio.wait({maintenance}, timeout=5))[0]:
            maintenance.cancel()
        if gw.tasks:
            log.info("waiting up to %.0fs for %d batch ingestion(s)", grace_s, len(gw.tasks))
            await asyncio.wait(list(gw.tasks), timeout=grace_s)
        if gw.tasks:  # past the grace: they record the interruption on their batch and stop
            gw.ingest.stopping.set()
            await asyncio.wait(list(gw.tasks), timeout=10)
        await gw.aclose()
        # The spans of the last ingestions, before the process exits (SIGTERM included).
        await asyncio.to_thread(flush_tracing)

    async def on_shutdown(app: web.Application) -> None:
        gw.closing.set()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app
