"""dramatiq broker wiring: Redis from REDIS_URL, orjson, tuned heartbeats, one async actor.

The classes that extend dramatiq live fenced in `workers.dramatiq_ext`; this module only
assembles them from batchyard's settings.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from schemas.config import AppConfig
from schemas.settings import Settings
from workers import encoder
from workers.dramatiq_ext import AsyncIOLoop, LaneBroker, WaitForRedis
from workers.protocol.connection import wait_for_redis
from workers.protocol.keys import Keys
from workers.protocol.lanes import ACTORS, LANES, queue_name

log = logging.getLogger("batchyard.broker")


def build_broker(settings: Settings, *, pool_size: int = 32, retries: int = 20) -> LaneBroker:
    """A RedisBroker whose dead-worker recovery takes seconds, not dramatiq's ~15 minutes."""
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set")
    encoder.install()
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=pool_size, timeout=30, health_check_interval=30
    )
    keys = Keys(settings.namespace)
    broker = LaneBroker(
        idle_poll_ms=settings.idle_poll_ms,
        wake_channel=keys.wake,
        client=redis.Redis(connection_pool=pool),
        namespace=keys.dramatiq_ns,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        # Maintenance is driven by `Heartbeat` (workers.dramatiq_ext); the random trigger stays
        # as a backstop.
        maintenance_chance=10_000,
        middleware=[
            AsyncIOLoop(),
            # Only infrastructure failures (Redis down mid-write) reach dramatiq's retries:
            # provider errors are handled by batchyard's own policy inside the actor.
            Retries(max_retries=retries, min_backoff=500, max_backoff=30_000),
            WaitForRedis(
                functools.partial(
                    wait_for_redis, settings.redis_url, give_up_s=settings.redis_wait_s
                )
            ),
        ],
    )
    return broker


def declare(
    broker: RedisBroker, config: AppConfig, fn: Callable[[dict[str, Any]], Awaitable[None]]
) -> list[dramatiq.Actor[[dict[str, Any]], Awaitable[None]]]:
    """Register the execute actor of each priority and every lane queue of every endpoint.

    The actors share one body; their dramatiq priorities make a worker take prefetched
    high-priority messages before normal ones, and normal ones before low ones.
    """
    first = next(iter(config.endpoints))
    actors: list[dramatiq.Actor[[dict[str, Any]], Awaitable[None]]] = [
        dramatiq.Actor(
            fn,
            broker=broker,
            actor_name=name,
            queue_name=queue_name(first, "" if level == "normal" else f"@{level}"),
            priority=priority,
            options={},
        )
        for level, (name, priority) in ACTORS.items()
    ]
    for endpoint in config.endpoints:
        for lane in LANES:
            broker.declare_queue(queue_name(endpoint, lane))
    return actors
