"""Shared pieces of the gateway tests (no tests here): keys, an in-process app on a real
redis-server, and the gateway as a real subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from producers.gateway import create_app
from producers.gateway.auth import hash_token
from producers.gateway.config import GatewayConfig
from schemas.config import DEFAULT_CONFIG, parse_config
from schemas.result import LLMResult
from schemas.settings import Settings
from tests.conftest import cli_env
from workers.protocol.keys import Keys
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, register
from workers.redis_server import free_port

#: Two tenants with a write key each, and a read-only key of tenant A (a dashboard).
KEY_A = "sk-test-tenant-a"
KEY_B = "sk-test-tenant-b"
KEY_A_READ = "sk-test-tenant-a-dashboard"
#: An operator's key (its own tenant): sees every endpoint on the providers page.
KEY_OPS = "sk-test-operator"
KEYS_ENV = ",".join(
    [
        f"tenant-a:{hash_token(KEY_A)}",
        f"tenant-b:{hash_token(KEY_B)}",
        f"dash-a:{hash_token(KEY_A_READ)}:read:tenant-a",
        f"ops:{hash_token(KEY_OPS)}:operator",
    ]
)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_line(custom_id: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
        **extra,
    }


def jsonl(rows: list[dict[str, Any]] | list[bytes]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows)


def write_results(redis_url: str, batch_id: str, results: list[LLMResult]) -> None:
    """Store results the way a worker does (one Lua call), without running workers."""
    client = redis.Redis.from_url(redis_url)
    try:
        script = register(client, Lua.WRITE_RESULTS)
        items = [(r.custom_id or "", r, False, b"") for r in results]
        script(**write_call(Keys(), 3600, items))
    finally:
        client.close()


@pytest.fixture
def gateway_config(tmp_path: Path) -> Callable[..., GatewayConfig]:
    def make(**overrides: Any) -> GatewayConfig:
        fields: dict[str, Any] = {"keys": KEYS_ENV, "storage_dir": tmp_path / "files"}
        return GatewayConfig(**{**fields, **overrides})

    return make


@pytest.fixture
async def api(
    redis_url: str, gateway_config: Callable[..., GatewayConfig]
) -> AsyncIterator[Callable[..., Any]]:
    """Start the gateway app in this event loop: `client = await api(**config overrides)`."""
    clients: list[TestClient[Any, Any]] = []

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        settings = Settings(redis_url=redis_url)
        app = create_app(
            settings, parse_config(DEFAULT_CONFIG), gateway_config(**overrides), grace_s=5
        )
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


class GatewayProcess:
    """`batchyard gateway` as a subprocess on a free port."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full one blocks.
        self.log = cwd / f"gateway-{self.port}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchyard", "gateway", "--port", str(self.port), *args],
                env=env,
                cwd=cwd,
                stderr=log,
            )

    def wait_ready(self, timeout_s: float = 20) -> GatewayProcess:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("gateway did not become healthy")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.log.read_text()

    def status_kb(self, field: str) -> int:
        """VmRSS / VmHWM of the gateway process, in kB."""
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if row.startswith(f"{field}:"):
                return int(row.split()[1])
        raise AssertionError(f"no {field} for {self.proc.pid}")

    def stop(self, timeout_s: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def gateway_proc(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateway subprocesses (keys of both tenants configured); all stopped at the end."""
    started: list[GatewayProcess] = []

    def start(redis_url: str, *args: str, **env: str) -> GatewayProcess:
        full = cli_env(
            redis_url,
            BATCHYARD_GATEWAY_KEYS=KEYS_ENV,
            BATCHYARD_GATEWAY_STORAGE_DIR=str(tmp_path / "files"),
            BATCHYARD_LOG_LEVEL="WARNING",
            **env,
        )
        proc = GatewayProcess(full, tmp_path, *args)
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()
