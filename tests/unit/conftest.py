"""Fixtures the adapter contract tests share: a fake provider server and one HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.fake_server import FakeServer


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    """A fault-injecting fake provider on 127.0.0.1, stopped after the test."""
    async with FakeServer() as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The one shared session an adapter gets, as in a worker process."""
    async with aiohttp.ClientSession() as s:
        yield s
