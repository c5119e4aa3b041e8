"""Puts a job back on a queue from the event loop: failover hops and delayed retries.

Uses dramatiq's own dispatch script, exactly as `RedisBroker.enqueue` does (delays go to the
`.DQ` queue with an `eta`), but through the asyncio Redis client so the loop never blocks.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from schemas.job import Job
from workers.keys import actor_for, queue_name


class Requeuer:
    """Enqueues follow-up messages for jobs (next endpoint, or same endpoint later)."""

    def __init__(self, client: aioredis.Redis, broker: RedisBroker) -> None:
        self.broker = broker
        self._dispatch: Any = client.register_script(_dispatch_source(broker))

    async def enqueue(self, job: Job, *, delay_ms: int = 0) -> None:
        """Queue `job` for its current hop's endpoint, after `delay_ms` if given."""
        queue = queue_name(job.current.endpoint, job.lane)
        redis_id = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        options: dict[str, Any] = {"redis_message_id": redis_id}
        if delay_ms > 0:
            queue = dq_name(queue)
            options["eta"] = now_ms + delay_ms
        message = {
            "queue_name": queue,
            "actor_name": actor_for(job.lane),
            "args": [job.model_dump(mode="json", exclude_defaults=True)],
            "kwargs": {},
            "options": options,
            "message_id": str(uuid.uuid4()),
            "message_timestamp": now_ms,
        }
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
            orjson.dumps(message),
        ]
        await self._dispatch(keys=[b.namespace], args=args)


def _dispatch_source(broker: RedisBroker) -> bytes:
    script: Any = broker.scripts["dispatch"]
    source: bytes = script.script if isinstance(script.script, bytes) else script.script.encode()
    return source
