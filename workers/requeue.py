"""Puts a job back on a queue from the event loop: failover hops and delayed retries.

The second of the three retry layers (see `workers.calls`): what cannot be retried in place
moves on through a queue, so a long wait or a next endpoint never holds a worker's slot.

Enqueues through dramatiq's own dispatch script, as `RedisBroker.enqueue` does (delays go to the
`.DQ` queue with an `eta`), but on the asyncio Redis client so the loop never blocks
(`workers.dramatiq_ext.AsyncDispatch`).
"""

from __future__ import annotations

import logging
import time
import uuid

import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError

from schemas.job import Job
from workers.dramatiq_ext import AsyncDispatch
from workers.dramatiq_ext.broker import LaneBroker
from workers.protocol import envelope

log = logging.getLogger("batchyard.requeue")


class Requeuer:
    """Enqueues follow-up messages for jobs (next endpoint, or same endpoint later)."""

    def __init__(self, client: aioredis.Redis, broker: RedisBroker) -> None:
        self.dispatch = AsyncDispatch(client, broker)
        self.client = client
        self.broker = broker

    async def enqueue(self, job: Job, *, delay_ms: int = 0) -> None:
        """Queue `job` for its current hop's endpoint, after `delay_ms` if given, and wake
        the idle consumers of that queue (this process's at once, the others' over the
        broker's wake channel), as producers' enqueues do."""
        queue, redis_id, message = envelope.encode(
            job, redis_id=uuid.uuid4().hex, now=time.time(), delay_ms=delay_ms
        )
        await self.dispatch.enqueue(queue, redis_id, message)
        if isinstance(self.broker, LaneBroker):
            self.broker.wake_local(queue)
            try:
                await self.client.publish(self.broker.wake_channel, queue)
            except RedisError as exc:  # a hint: an idle poll finds the message anyway
                log.debug("wake-up of %s not published (%s)", queue, exc)
