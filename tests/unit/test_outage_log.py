"""The worker's Redis outage log: one line when Redis goes, one when it is back (#18)."""

from __future__ import annotations

import logging

import pytest
import redis

from workers.dramatiq_ext.outage import FLAP_S, OutageLog

DOWN = redis.ConnectionError("refused")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records]


@pytest.fixture
def clock() -> list[float]:
    return [100.0]


@pytest.fixture
def outages(clock: list[float], caplog: pytest.LogCaptureFixture) -> OutageLog:
    caplog.set_level(logging.WARNING, logger="batchyard.redis")
    return OutageLog(clock=lambda: clock[0])


def test_an_outage_is_one_line_down_and_one_line_back(
    outages: OutageLog, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(50):
        outages.down(DOWN, job=True)
        clock[0] += 0.5
    outages.up()
    outages.up()
    assert lines(caplog) == ["Redis unreachable", "Redis is back"]
    assert "25.0s; 50 job(s)" in caplog.records[-1].getMessage()


def test_a_restarted_redis_that_flaps_while_loading_is_still_one_outage(
    outages: OutageLog, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # Down for 30 s, back, refused again a moment later (loading its data), then back:
    outages.down(DOWN)
    clock[0] += 30
    outages.up()
    clock[0] += 0.2
    outages.down(DOWN, job=True)
    clock[0] += 1
    outages.up()
    assert lines(caplog) == ["Redis unreachable", "Redis is back"]
    assert outages.outages == 1


def test_a_flap_that_lasts_and_a_later_outage_are_reported(
    outages: OutageLog, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    outages.down(DOWN)
    clock[0] += 10
    outages.up()
    # refused again at once, but for longer than a flap: a second outage after all
    clock[0] += 1
    outages.down(DOWN)
    clock[0] += FLAP_S + 1
    outages.down(DOWN)
    outages.up()
    # and one long after the last is a new one from its first refusal
    clock[0] += 60
    outages.down(DOWN)
    outages.up()
    assert lines(caplog) == ["Redis unreachable", "Redis is back"] * 3
