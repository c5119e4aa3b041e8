"""Puts a job back on a queue from the event loop: failover hops and delayed retries.

The second of the three retry layers (see `workers.calls`): what cannot be retried in place
moves on through a queue, so a long wait or a next endpoint never holds a worker's slot.

Uses dramatiq's own dispatch script, exactly as `RedisBroker.enqueue` does (delays go to the
`.DQ` queue with an `eta`), but through the asyncio Redis client so the loop never blocks.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker

from schemas.job import Job
from workers.protocol import envelope


class Requeuer:
    """Enqueues follow-up messages for jobs (next endpoint, or same endpoint later)."""

    def __init__(self, client: aioredis.Redis, broker: RedisBroker) -> None:
        self.broker = broker
        self._dispatch: Any = client.register_script(_dispatch_source(broker))

    async def enqueue(self, job: Job, *, delay_ms: int = 0) -> None:
        """Queue `job` for its current hop's endpoint, after `delay_ms` if given."""
        now = time.time()
        queue, redis_id, message = envelope.encode(
            job, redis_id=uuid.uuid4().hex, now=now, delay_ms=delay_ms
        )
        now_ms = int(now * 1000)
        b = self.broker
        args = [
            "enqueue",
            now_ms,
            queue,
            b.broker_id,
            b.heartbeat_timeout,
            b.dead_message_ttl,
            0,
            b._max_unpack_size(),  # type: ignore[no-untyped-call]
            redis_id,
            message,
        ]
        await self._dispatch(keys=[b.namespace], args=args)


def _dispatch_source(broker: RedisBroker) -> bytes:
    script: Any = broker.scripts["dispatch"]
    source: bytes = script.script if isinstance(script.script, bytes) else script.script.encode()
    return source
