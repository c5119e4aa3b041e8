"""Opt-in response cache in Redis: identical (model, messages, params) are answered once.

A hit costs no provider call and no rate-limit capacity. Concurrent identical requests do
not all miss: the first takes a short Redis lock and the others wait for its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import orjson
from pydantic import Field

from providers.base import ProviderResponse
from workers.plugins import CallContext, Plugin, PluginConfig


class CacheConfig(PluginConfig):
    """How long answers are kept, and how long a duplicate waits for the first call."""

    ttl_s: int = Field(default=86_400, ge=1, le=365 * 86_400)
    wait_s: float = Field(default=120.0, ge=0, le=3600)


def cache_key(ctx: CallContext) -> str:
    """Hash of everything that shapes the answer: model, kind and the body (less its model)."""
    req = ctx.request
    shaped = {k: v for k, v in req.body.items() if k != "model"}
    digest = hashlib.sha256(
        orjson.dumps([ctx.model, req.kind, shaped], option=orjson.OPT_SORT_KEYS)
    )
    return digest.hexdigest()


class ResponseCache(Plugin):
    """Answers repeated requests from Redis."""

    name = "cache"
    Config = CacheConfig
    config: CacheConfig

    async def before_call(self, ctx: CallContext) -> ProviderResponse | None:
        """A cached answer, or None after taking the lock (or giving up waiting for it)."""
        digest = cache_key(ctx)
        key, lock = self.keys.cache(digest)
        ctx.state["cache_key"] = digest
        deadline = time.monotonic() + self.config.wait_s
        delay = 0.02
        while True:
            raw = await self.redis.get(key)
            if raw is not None:
                return ProviderResponse.model_validate_json(raw)
            if await self.redis.set(lock, "1", nx=True, px=int(self.config.wait_s * 1000)):
                # The first caller may have stored its answer and freed the lock between
                # our GET and SET: look again before calling the provider.
                raw = await self.redis.get(key)
                if raw is not None:
                    await self.redis.delete(lock)
                    return ProviderResponse.model_validate_json(raw)
                ctx.state["cache_lock"] = lock
                return None
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def after_call(self, ctx: CallContext, response: ProviderResponse) -> ProviderResponse:
        """Store the answer and let waiting duplicates have it."""
        key, lock = self.keys.cache(ctx.state["cache_key"])
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, response.model_dump_json(), ex=self.config.ttl_s)
        pipe.delete(lock)
        await pipe.execute()
        return response

    async def call_failed(self, ctx: CallContext) -> None:
        """Free the lock so a duplicate can try the call itself."""
        lock = ctx.state.get("cache_lock")
        if lock:
            await self.redis.delete(lock)
