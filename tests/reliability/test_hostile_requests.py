"""Hostile gateway requests and config files, fuzzed: a clear named error, nothing crashes."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.gateway import create_app
from producers.gateway.auth import hash_token
from producers.gateway.config import GatewayConfig
from schemas.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config
from schemas.settings import Settings
from tests.reliability.conftest import FIGURES
from tests.reliability.test_hostile_input import json_values
from workers.redis_server import RedisServer, free_port

KEY = "sk-test-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Gateway:
    """The gateway app on its own loop thread, so hypothesis can hit it synchronously."""

    def __init__(self, redis_url: str, storage: Path) -> None:
        self.port = free_port()
        config = GatewayConfig(keys=f"fuzz:{hash_token(KEY)}", storage_dir=storage)  # type: ignore[arg-type]
        app = create_app(
            Settings(redis_url=redis_url), parse_config(DEFAULT_CONFIG), config, grace_s=1
        )
        self.runner = web.AppRunner(app)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={**AUTH, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with RedisServer() as server:
        gw = Gateway(server.url, tmp_path_factory.mktemp("files"))
        try:
            yield gw
        finally:
            gw.stop()


def assert_clear_error(status: int, body: bytes) -> dict[str, Any]:
    """A 4xx with an OpenAI-shaped error naming what was wrong (never a 5xx)."""
    assert 400 <= status < 500, (status, body[:300])
    error: dict[str, Any] = orjson.loads(body)["error"]
    assert error["message"] and error["type"], error
    FIGURES["inputs_fuzzed"] = FIGURES.get("inputs_fuzzed", 0) + 1
    return error


def fuzzed(status: int, body: bytes) -> None:
    """A fuzzed body may be valid by chance (2xx); anything else is a clear 4xx."""
    if status >= 300:
        assert_clear_error(status, body)
    else:
        FIGURES["inputs_fuzzed"] = FIGURES.get("inputs_fuzzed", 0) + 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["messages", "model", "custom_id", "max_tokens", "body", "temperature"]),
        json_values,
        max_size=4,
    )
)
def test_fuzzed_job_bodies_get_a_clear_error_or_are_accepted(
    gateway: Gateway, body: dict[str, Any]
) -> None:
    status, raw = gateway.request(
        "POST", "/v1/jobs?wait=0", orjson.dumps(body), {"Content-Type": "application/json"}
    )
    fuzzed(status, raw)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_as_batch_bodies_get_a_clear_error(gateway: Gateway, raw: bytes) -> None:
    status, body = gateway.request("POST", "/v1/batches", raw, {"Content-Type": "application/json"})
    assert_clear_error(status, body)


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    [
        ("POST", "/v1/jobs", b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "json"),
        ("POST", "/v1/jobs", b'{"messages": [], "max_tokens": 1' + b"0" * 5000 + b"}", "json"),
        ("POST", "/v1/jobs", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "json"),
        ("POST", "/v1/jobs", b'{"messages": [{"role": "user", "content": "hi"}]}', "text/plain"),
        ("POST", "/v1/batches", b"input_file_id=file-1", "application/x-www-form-urlencoded"),
        ("POST", "/v1/jobs", b'{"messages": "' + b"x" * (2 * 1024 * 1024) + b'"}', "json"),
        ("GET", "/v1/batches/..%2F..%2Fetc%2Fpasswd", b"", "json"),
        ("GET", "/v1/files/..%2F..%2Fetc%2Fpasswd/content", b"", "json"),
        ("GET", "/v1/jobs/%00", b"", "json"),
        ("POST", "/v1/batches/batch_%2E%2E/cancel", b"", "json"),
    ],
    ids=[
        "deep-nesting",
        "huge-number",
        "invalid-utf8",
        "wrong-content-type",
        "form-instead-of-json",
        "oversized",
        "path-like-batch-id",
        "path-like-file-id",
        "nul-job-id",
        "dot-dot-cancel",
    ],
)
def test_hostile_requests_get_a_clear_4xx_and_the_gateway_stays_up(
    gateway: Gateway, method: str, path: str, body: bytes, content_type: str
) -> None:
    ctype = "application/json" if content_type == "json" else content_type
    status, raw = gateway.request(method, path, body, {"Content-Type": ctype})
    if content_type == "text/plain" and status < 300:
        # Lenient by design: a JSON body sent as text/plain is parsed like JSON (curl users).
        assert orjson.loads(raw)["object"] == "job"
    else:
        assert_clear_error(status, raw)
    assert gateway.request("GET", "/healthz")[0] == 200


config_like = st.fixed_dictionaries(
    {"endpoints": st.dictionaries(st.text(max_size=8), json_values, max_size=3)},
    optional={"routes": json_values, "policy": json_values, "extra": json_values},
)


@settings(max_examples=200, deadline=None)
@given(data=config_like | json_values)
def test_fuzzed_config_files_are_valid_or_one_named_config_error(data: Any) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith("config: ") and "\n" not in text.strip(), text
    FIGURES["inputs_fuzzed"] = FIGURES.get("inputs_fuzzed", 0) + 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.text(max_size=200).map(str.encode))
def test_fuzzed_config_file_bytes_are_one_error_naming_the_file(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc
    FIGURES["inputs_fuzzed"] = FIGURES.get("inputs_fuzzed", 0) + 1


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"endpoints: {caf\xe9: {provider: mock}}\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8"):
        load_config(path)


def test_a_deeply_nested_yaml_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(
        yaml.safe_dump({"endpoints": {"x": {"provider": "mock"}}})
        + "routes: "
        + "[" * 5000
        + "]" * 5000
        + "\n"
    )
    with pytest.raises(ConfigError, match=r"deep\.yaml: nested too deeply"):
        load_config(path)
