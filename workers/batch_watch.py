"""What a worker knows of its batches' state: cancels as they are published, and each batch's
status, cost and budget read at most once per poll interval per process."""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis

from workers.background import cancel_and_wait
from workers.protocol.batch_record import WORKER_FIELDS, BatchState
from workers.protocol.keys import Keys

log = logging.getLogger("batchyard.worker")

#: Entries kept before a cache starts over (a long-lived worker sees many batches).
_MAX_KEPT = 10_000


class BatchWatch:
    """Cancelled batches and cached batch states of one worker process."""

    def __init__(self, client: aioredis.Redis, keys: Keys, poll_s: float) -> None:
        self._redis = client
        self.keys = keys
        self.poll_s = poll_s
        #: Batches cancelled since this process subscribed to `Keys.cancels`.
        self._cancelled: set[str] = set()
        self._states: dict[str, tuple[float, BatchState]] = {}
        self._reads: dict[str, asyncio.Task[BatchState]] = {}
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Subscribe to cancels (on the running loop)."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="cancel listener"
            )

    async def aclose(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)

    async def _listen(self) -> None:
        """Learn of every cancel as it happens (pub/sub), so a request of a cancelled batch
        is not sent even when its message was fetched before the cancel. Should the
        subscription drop, the batch status read every `poll_s` still stops them."""
        lost = False  # said once, not every second of an outage
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.keys.cancels)
                    lost = False
                    async for message in pubsub.listen():
                        data = message.get("data")
                        if isinstance(data, bytes):
                            if len(self._cancelled) > _MAX_KEPT:
                                self._cancelled.clear()
                            self._cancelled.add(data.decode())
            except (redis.RedisError, OSError) as exc:
                if not lost:
                    log.warning("cancel subscription lost, resubscribing: %s", exc)
                lost = True
                await asyncio.sleep(1.0)

    def published(self, batch_id: str) -> bool:
        """Whether a cancel of the batch was published since this process subscribed."""
        return batch_id in self._cancelled

    def cancelled(self, batch_id: str) -> bool:
        """Whether the batch is known cancelled, without a Redis read: a published cancel,
        or the last status read (`state`)."""
        if batch_id in self._cancelled:
            return True
        cached = self._states.get(batch_id)
        return cached is not None and cached[1].status in ("cancelling", "cancelled")

    def fresh(self, batch_id: str) -> BatchState | None:
        """The batch's state as `state` would return it at once, read within the poll
        interval; None when `state` must read it. Most requests are told here, without a
        coroutine (#22)."""
        cached = self._states.get(batch_id)
        if cached is not None and time.monotonic() - cached[0] <= self.poll_s:
            return cached[1]
        return None

    def remember(self, batch_id: str, state: BatchState) -> None:
        """A state read elsewhere (`FetchCheck`, in a consumer thread, with its fetch's result
        check): kept as `state` keeps what it reads."""
        if len(self._states) > _MAX_KEPT:
            self._states.clear()
        self._states[batch_id] = (time.monotonic(), state)

    async def state(self, batch_id: str) -> BatchState:
        """Status, cost and budget of a batch; one Redis read per poll interval per process,
        however many of its requests are in flight."""
        cached = self.fresh(batch_id)
        if cached is not None:
            return cached
        task = self._reads.get(batch_id)
        if task is None:
            task = asyncio.create_task(self._read(batch_id))
            self._reads[batch_id] = task
            task.add_done_callback(lambda _: self._reads.pop(batch_id, None))
        return await asyncio.shield(task)

    async def _read(self, batch_id: str) -> BatchState:
        raw = await self._redis.hmget(self.keys.batch(batch_id), list(WORKER_FIELDS))
        state = BatchState.parse(raw)
        self.remember(batch_id, state)
        return state
