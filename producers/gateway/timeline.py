"""Progress samples of batches, for the dashboard's throughput chart.

Workers record no history, so gateways sample what they read anyway (event streams, the
dashboard): `epoch_s:done` pairs in a capped Redis list. Samples get sparser as a batch ages
(at most one per `elapsed / 300` seconds), so even a day-long batch fits the cap.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from workers.protocol.gateway import GatewayKeys

#: Samples kept per batch (the oldest are dropped).
MAX_SAMPLES = 2000
#: Batches remembered by the per-process throttle before it is pruned.
_MEMORY = 4096


class Timeline:
    """Writes and reads the samples of every batch; one per gateway process."""

    def __init__(self, redis: aioredis.Redis, keys: GatewayKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._last: dict[str, tuple[float, int]] = {}

    def due(self, batch_id: str, started_at: float, done: int, now: float) -> bool:
        """Is a new sample worth writing? Only when `done` moved and the spacing has passed."""
        last = self._last.get(batch_id)
        if last is None:
            return True
        at, seen = last
        spacing = max(1.0, (now - started_at) / 300)
        return done != seen and now - at >= spacing

    async def record(self, batch_id: str, started_at: float, done: int) -> None:
        """Sample a batch's progress, unless one was taken too recently."""
        now = time.time()
        if not self.due(batch_id, started_at, done, now):
            return
        if len(self._last) >= _MEMORY:
            self._last.clear()
        self._last[batch_id] = (now, done)
        name = self.keys.timeline(batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(name, f"{now:.3f}:{done}")
        pipe.ltrim(name, 0, MAX_SAMPLES - 1)
        pipe.expire(name, self.ttl_s)
        await pipe.execute()

    async def read(self, batch_id: str) -> list[tuple[float, int]]:
        """The samples, oldest first; at most one per distinct time."""
        raw = await self.redis.lrange(self.keys.timeline(batch_id), 0, -1)
        points: dict[float, int] = {}
        for item in raw:
            at, _, done = (item.decode() if isinstance(item, bytes) else str(item)).partition(":")
            try:
                points[float(at)] = max(points.get(float(at), 0), int(done))
            except ValueError:
                continue
        return sorted(points.items())
