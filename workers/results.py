"""Writes each request's one result with the atomic Lua script from `workers.keys`.

Writes are coalesced: while one script call is in flight, results that finish meanwhile wait
and go together in the next call. At low load every result is written at once; under load a
single round trip carries hundreds, which is where most of a worker's Redis time went.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from schemas.result import LLMResult
from workers import keys as K

#: Results per script call; bounds the Lua run time (Redis is single-threaded).
MAX_PER_CALL = 500


Item = tuple[str, LLMResult, bool, bytes]


def result_args(namespace: str, ttl_s: int, items: Sequence[Item]) -> list[Any]:
    """ARGV of `WRITE_RESULTS` for (key, result, counts_in_total, dead_letter) items."""
    blob = bytearray()
    for key, result, count, dead in items:
        fields = (
            result.batch_id.encode(),
            key.encode(),
            result.status.encode(),
            result.model_dump_json().encode(),
            b"1" if count else b"0",
            dead,
            repr(result.cost_usd or 0.0).encode(),
            b"",
        )
        blob += K.SEP.join(fields)
    return [namespace, ttl_s, time.time(), bytes(blob)]


class ResultWriter:
    """Exactly-once result storage on top of at-least-once message delivery."""

    def __init__(self, client: aioredis.Redis, keys: K.Keys, ttl_s: int) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self._script: Any = client.register_script(K.WRITE_RESULTS)
        self._pending: list[tuple[Item, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, key: str, result: LLMResult, dead: bytes = b"") -> bool:
        """Store `result` unless one exists for (batch, key); True when this call stored it.

        `dead` is the dead-letter record kept for a failed request, so it can be re-run.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((key, result, False, dead), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            group = self._pending[:MAX_PER_CALL]
            del self._pending[:MAX_PER_CALL]
            items = [item for item, _ in group]
            try:
                stored = await self._script(args=result_args(self.keys.ns, self.ttl_s, items))
            except Exception as exc:  # every waiter must learn about the failure
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), flag in zip(group, stored, strict=True):
                if not future.done():
                    future.set_result(bool(flag))
