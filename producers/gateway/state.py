"""What one gateway process holds: settings, Redis clients, the file store, limits, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from aiohttp import web

from producers.client import AsyncClient
from producers.gateway.auth import KeyRing, principal
from producers.gateway.config import GatewayConfig
from producers.gateway.errors import not_found
from producers.gateway.ingest import Ingest
from producers.gateway.limits import Backpressure, RateLimiter
from producers.gateway.metrics import Metrics
from producers.gateway.sessions import SessionStore
from producers.gateway.storage import FileStore
from producers.gateway.timeline import Timeline
from producers.gateway.views import BatchState, load_batch
from schemas.config import AppConfig
from schemas.settings import Settings
from workers.protocol.gateway import GatewayKeys
from workers.protocol.keys import Keys

log = logging.getLogger("batchyard.gateway")

#: Connections for everything but waiting: records, submissions, rate counters.
_SPARE_CONNECTIONS = 512


def with_max_connections(url: str, size: int) -> str:
    """The Redis URL with a connection pool size, unless it already names one."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if any(name == "max_connections" for name, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("max_connections", size)])))


@dataclass
class Gateway:
    """Per-process resources, created once when the app is built."""

    settings: Settings
    app_config: AppConfig
    config: GatewayConfig
    client: AsyncClient
    keys: Keys
    gkeys: GatewayKeys
    store: FileStore
    ring: KeyRing
    metrics: Metrics
    rate: RateLimiter
    backpressure: Backpressure
    ingest: Ingest
    waiters: asyncio.Semaphore
    sessions: SessionStore
    timeline: Timeline
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Open event streams per key name (`events.stream_slot`).
    streams: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, app_config: AppConfig, config: GatewayConfig) -> Gateway:
        """Wire everything together; opens no connection yet."""
        assert settings.redis_url is not None
        # Every waiting request holds a connection (XREAD BLOCK): redis-py's default of 100
        # per pool would fail the 101st.
        url = with_max_connections(settings.redis_url, config.max_waiters + _SPARE_CONNECTIONS)
        client = AsyncClient(
            settings=settings.model_copy(update={"redis_url": url}), config=app_config
        )
        keys, gkeys = client.keys, GatewayKeys(settings.namespace)
        metrics = Metrics()
        store = FileStore(
            client.redis,
            gkeys,
            config.storage_dir,
            settings.namespace,
            small_bytes=config.small_file_kib * 1024,
            ttl_s=settings.result_ttl_s,
        )
        return cls(
            settings=settings,
            app_config=app_config,
            config=config,
            client=client,
            keys=keys,
            gkeys=gkeys,
            store=store,
            ring=KeyRing(config.keys),
            metrics=metrics,
            rate=RateLimiter(client.redis, gkeys, config, metrics),
            backpressure=Backpressure(client.redis, keys, app_config, config, metrics),
            ingest=Ingest(client, gkeys, store, app_config, config),
            waiters=asyncio.Semaphore(config.max_waiters),
            sessions=SessionStore(client.redis, gkeys, config.session_ttl_s),
            timeline=Timeline(client.redis, gkeys, settings.result_ttl_s),
        )

    @property
    def redis(self) -> aioredis.Redis:
        """The shared asyncio Redis client."""
        return self.client.redis

    async def move_phase(self, batch_id: str, old: str, new: str, **fields: Any) -> bool:
        """Change a batch's gateway phase only if it is still `old` (`lua/move_phase.lua`)."""
        return await self.ingest.move(batch_id, old, new, **fields)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run work past the request that started it; shutdown waits for it."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def owned_batch(self, request: web.Request, batch_id: str, kind: str) -> BatchState:
        """The caller's batch (or job), else 404 — also when it is another owner's."""
        state = await load_batch(self.redis, self.keys, self.gkeys, batch_id)
        if state is None or state.kind != kind or state.owner != principal(request).tenant:
            raise not_found(kind, batch_id)
        return state

    async def aclose(self) -> None:
        """Close the Redis client."""
        await self.client.aclose()


GATEWAY = web.AppKey("gateway", Gateway)


def gateway(request: web.Request) -> Gateway:
    """The gateway state of the app serving `request`."""
    return request.app[GATEWAY]
