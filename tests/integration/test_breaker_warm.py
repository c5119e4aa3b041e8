"""A worker reads its breakers' states as it starts (`EndpointHealth.warm`): its first
requests then need no read before their calls, and no probe is taken by the read."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from schemas.config import BreakerConfig
from workers.health import Decision, EndpointHealth
from workers.protocol.keys import Keys

pytestmark = pytest.mark.integration
KEYS = Keys("t")


def warmed(redis_url: str, endpoint: str) -> tuple[bool, Decision]:
    """(allows at once, admit's decision) of a breaker just warmed."""

    async def main() -> tuple[bool, Decision]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            health = EndpointHealth(client, "t", endpoint, BreakerConfig())
            await health.warm()
            return health.allows(), (await health.admit()).decision
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_closed_breaker_allows_the_first_request_without_a_read(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    before = sync.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert warmed(redis_url, "fresh") == (True, Decision.allow)
    # the admission was told from the warm read: no breaker script ran
    assert sync.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) == before


def test_warming_an_open_or_half_open_breaker_takes_no_probe(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    # open for a while yet: denied, and nothing written
    sync.hset(KEYS.health("down"), mapping={"state": "open", "open_until": time.time() + 60})
    assert warmed(redis_url, "down") == (False, Decision.deny)
    assert sync.get(KEYS.probe("down")) is None
    # its open time over: only the request that asks takes the probe, not the warm read
    sync.hset(KEYS.health("over"), mapping={"state": "open", "open_until": time.time() - 1})
    assert warmed(redis_url, "over") == (False, Decision.probe)
    assert sync.get(KEYS.probe("over")) is not None
