"""Figures the reliability tests measure, printed once at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import fixture_redis
from workers.redis_server import RedisServer

#: name -> value; tests add to it through the `figures` fixture.
FIGURES: dict[str, Any] = {}

ORDER = [
    ("kills survived", "kills_survived"),
    ("redelivery time, worst (s)", "redelivery_s"),
    ("repeated provider calls", "repeated_calls"),
    ("duplicate results", "duplicate_results"),
    ("Redis restarts survived", "redis_restarts"),
    ("provider fault storms ended", "fault_storms"),
    ("inputs fuzzed", "inputs_fuzzed"),
    ("leaks found", "leaks_found"),
    ("Redis bytes per queued request", "bytes_per_queued"),
    ("Redis bytes per stored result", "bytes_per_result"),
    ("producer RSS growth for 100k requests (MiB)", "producer_rss_mib"),
]


class Figures:
    """Record a figure (`set`) or add to a count (`add`)."""

    def set(self, name: str, value: Any) -> None:
        FIGURES[name] = value

    def add(self, name: str, value: int) -> None:
        FIGURES[name] = FIGURES.get(name, 0) + value

    def worst(self, name: str, value: float) -> None:
        FIGURES[name] = max(FIGURES.get(name, value), value)


@pytest.fixture
def figures() -> Figures:
    return Figures()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability summary")
    for label, name in ORDER:
        if name in FIGURES:
            value = FIGURES[name]
            text = f"{value:.1f}" if isinstance(value, float) else str(value)
            terminalreporter.write_line(f"{label:<46} {text}")


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    """A redis-server with `appendonly yes` and `appendfsync everysec`, restartable in place."""
    server = fixture_redis(appendonly=True)
    try:
        yield server
    finally:
        server.stop()
