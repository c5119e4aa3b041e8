"""What a submission costs in round trips, against a real Redis: scripts a client has run go
as bare EVALSHA (no SCRIPT EXISTS per pipe), and a script Redis has lost since is loaded and
run again, so nothing is enqueued twice or lost."""

from __future__ import annotations

import asyncio

import pytest
import redis

from producers.client import AsyncClient, Client
from schemas.config import DEFAULT_CONFIG, parse_config
from tests.conftest import openai_line

pytestmark = pytest.mark.integration

CONFIG = parse_config(DEFAULT_CONFIG)


def calls(r: redis.Redis, command: str) -> int:
    stats = r.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def queued(client: Client, batch_id: str) -> tuple[int, bool]:
    batch = client.batch(batch_id)
    return batch.counts.total, batch.sealed


def messages(r: redis.Redis) -> int:
    """Messages waiting on every queue (each enqueued once)."""
    return sum(int(r.hlen(k)) for k in r.scan_iter(match="*.msgs"))


def test_known_scripts_skip_script_exists_and_lost_ones_are_reloaded(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    lines = [openai_line(f"k{i}", "hi") for i in range(3)]
    with Client(redis_url, config=CONFIG) as client:
        first = client.submit_many(lines)  # learns the scripts
        r.config_resetstat()
        second = client.submit_many(lines)
        assert calls(r, "script|exists") == 0 and calls(r, "evalsha") == 1  # enqueue + seal
        # Redis loses its scripts (SCRIPT FLUSH, a failover to a replica):
        r.script_flush()
        third = client.submit_many(lines)
        for report in (first, second, third):
            assert report.enqueued == 3
            assert queued(client, report.batch_id) == (3, True)

        async def run() -> tuple[int, int]:
            async with AsyncClient(redis_url, config=CONFIG) as aclient:
                await aclient.submit_many(lines)
                r.config_resetstat()
                report = await aclient.submit_many(lines)
                exists = calls(r, "script|exists")
                r.script_flush()
                again = await aclient.submit_many(lines)
                assert queued(client, again.batch_id) == (3, True)
                return exists, report.enqueued

        assert asyncio.run(run()) == (0, 3)
    assert messages(r) == 6 * 3
