"""Fixtures the adapter contract tests share: a fake provider server and one HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.fake_server import FakeServer
from providers.http import HTTPProvider
from providers.wire import WirePool


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    """A fault-injecting fake provider on 127.0.0.1, stopped after the test."""
    async with FakeServer() as srv:
        yield srv


#: Modules whose adapters run over both HTTP clients (the `session` fixture's `http_client`).
ADAPTER_TESTS = ("test_contract_", "test_translation_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each adapter test runs over aiohttp and over the lean client workers use."""
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "session" in metafunc.fixturenames and module.startswith(ADAPTER_TESTS):
        metafunc.parametrize("http_client", ["aiohttp", "wire"], indirect=True)


@pytest.fixture
def http_client(request: pytest.FixtureRequest) -> str:
    """Which client HTTP adapters call through: "aiohttp" unless parametrized."""
    return str(getattr(request, "param", "aiohttp"))


@pytest.fixture
async def session(
    http_client: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[aiohttp.ClientSession]:
    """The one shared session an adapter gets, as in a worker process; with "wire", every
    HTTP adapter calls through the lean client instead (`providers.wire`), as workers do."""
    pool = WirePool() if http_client == "wire" else None
    monkeypatch.setattr(HTTPProvider, "wire", pool)
    async with aiohttp.ClientSession() as s:
        yield s
    if pool is not None:
        pool.close()
