"""The gateway as a real process: the official `openai` SDK drives a batch through it to real
workers, a 300 MB upload is refused in bounded memory, 200 concurrent jobs wait for results."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types import BatchError
from openai.types.chat import ChatCompletion

from tests.conftest import WorkerPool, cli_env
from tests.integration.test_gateway_support import (
    KEY_A,
    KEY_B,
    GatewayProcess,
    auth,
    chat_line,
    gateway_proc,
    jsonl,
)

pytestmark = pytest.mark.integration
__all__ = ["gateway_proc"]  # fixture used by name

StartGateway = Callable[..., GatewayProcess]


def sdk(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0, timeout=30)


@pytest.mark.timeout(60)
def test_openai_sdk_runs_a_batch_end_to_end_and_other_keys_see_nothing(
    tmp_path: Path,
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: StartGateway,
) -> None:
    config = write_config(
        {"endpoints": {"mock": {"provider": "mock", "script": {"doomed": ["invalid_request"]}}}}
    )
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--concurrency", "20")
    gateway = gateway_proc(redis_url, "--config", str(config))
    client = sdk(gateway, KEY_A)
    lines = [chat_line(f"q{i}", f"question {i}") for i in range(20)] + [chat_line("doomed")]
    # Given a batch file uploaded and a batch created with the SDK, unchanged,
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.bytes == len(jsonl(lines))
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "e2e"},
    )
    # when it is polled until it is done,
    deadline = time.monotonic() + 40
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    # then it completed with the SDK's own types all the way,
    assert batch.status == "completed" and batch.metadata == {"run": "e2e"}
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (20, 1)
    assert batch.output_file_id and batch.error_file_id
    output = client.files.content(batch.output_file_id).content
    answers = {}
    for raw in output.splitlines():
        row = orjson.loads(raw)
        completion = ChatCompletion.model_validate(row["response"]["body"])
        answers[row["custom_id"]] = completion.choices[0].message.content
    assert answers == {f"q{i}": f"question {i}" for i in range(20)}
    [failure] = [
        orjson.loads(r) for r in client.files.content(batch.error_file_id).content.splitlines()
    ]
    assert failure["custom_id"] == "doomed" and failure["error"]["code"] == "invalid_request"
    assert client.files.retrieve(batch.output_file_id).bytes == len(output)
    # A file that is not JSONL fails its batch, with errors the SDK types too,
    bad = client.files.create(file=("bad.jsonl", b"not json\n"), purpose="batch")
    failed = client.batches.create(
        input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while failed.status == "validating":
        assert time.monotonic() < deadline + 10, "bad batch still validating"
        failed = client.batches.retrieve(failed.id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert isinstance(failed.errors.data[0], BatchError)
    assert (failed.errors.data[0].line, failed.errors.data[0].code) == (1, "invalid_json_line")
    # and another tenant can neither see nor cancel it (404, not 403),
    other = sdk(gateway, KEY_B)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(batch.output_file_id)
    assert list(other.batches.list()) == []
    assert [b.id for b in client.batches.list(limit=5)] == [failed.id, batch.id]
    # while a wrong key, or none, gets 401.
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway, "sk-not-configured").batches.retrieve(batch.id)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as no_key:
        urllib.request.urlopen(f"{gateway.url}/v1/batches/{batch.id}", timeout=5)
    assert no_key.value.code == 401


async def _multipart(size: int, chunk: bytes, boundary: str) -> AsyncIterator[bytes]:
    """A multipart upload of `size` generated bytes, produced as it is sent."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    for _ in range(size // len(chunk)):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


async def _upload(url: str, size: int, declared: bool) -> tuple[int, dict[str, Any]]:
    boundary = "batchyardtestboundary"
    line = orjson.dumps(chat_line("big", "z" * 900)) + b"\n"
    chunk = line * (65536 // len(line))
    headers = {**auth(KEY_A), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    if declared:
        headers["Content-Length"] = str(size + 400)
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            f"{url}/v1/files", data=_multipart(size, chunk, boundary), headers=headers
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.timeout(60)
def test_a_300_mb_upload_gets_413_while_gateway_memory_stays_flat(
    tmp_path: Path, redis_url: str, gateway_proc: StartGateway
) -> None:
    gateway = gateway_proc(redis_url)
    # Warm up every code path of an upload (multipart parsing, disk spill) first.
    status, _ = asyncio.run(_upload(gateway.url, 4 << 20, declared=False))
    assert status == 200
    peak_before_kb = gateway.status_kb("VmHWM")
    # A streamed (chunked) 300 MB body is counted as it arrives and refused past 200 MiB,
    status, body = asyncio.run(_upload(gateway.url, 300 << 20, declared=False))
    assert status == 413
    assert body["error"]["code"] == "file_too_large"
    # one that declares its size is refused before it is read,
    status, body = asyncio.run(_upload(gateway.url, 300 << 20, declared=True))
    assert status == 413
    # aiohttp's client keeps the socket of an upload it abandoned until it is collected; the
    # gateway would linger on it (reading and dropping the rest) when stopped at teardown.
    gc.collect()
    # and the gateway's peak memory hardly moved.
    growth_mb = (gateway.status_kb("VmHWM") - peak_before_kb) / 1024
    assert growth_mb < 5, f"gateway peak RSS grew by {growth_mb:.1f} MB"
    assert not [p for p in (tmp_path / "files").rglob("*.part")]


@pytest.mark.timeout(60)
def test_200_concurrent_jobs_wait_for_their_results(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: StartGateway,
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 50}}})
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--concurrency", "250")
    gateway = gateway_proc(redis_url, "--config", str(config))

    async def run() -> list[tuple[int, dict[str, Any]]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> tuple[int, dict[str, Any]]:
                body = {"messages": [{"role": "user", "content": f"job {i}"}]}
                async with session.post(
                    f"{gateway.url}/v1/jobs?wait=30", json=body, headers=auth(KEY_A)
                ) as resp:
                    return resp.status, await resp.json()

            return await asyncio.gather(*(one(i) for i in range(200)))

    replies = asyncio.run(run())
    assert [status for status, _ in replies] == [200] * 200
    assert all(job["status"] == "succeeded" for _, job in replies)
    assert [job["result"]["output"] for _, job in replies] == [f"job {i}" for i in range(200)]


@pytest.mark.timeout(30)
def test_gateway_needs_redis_url_starts_without_config_and_stops_on_sigterm(
    tmp_path: Path, redis_url: str
) -> None:
    # Without REDIS_URL: exit 2 with one clear line.
    proc = subprocess.run(
        [sys.executable, "-m", "batchyard", "gateway"],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "REDIS_URL" in proc.stderr
    # With it, no config file and no keys: it serves health, refuses /v1, stops on SIGTERM.
    env = {k: v for k, v in cli_env(redis_url).items() if not k.startswith("BATCHYARD_GATEWAY")}
    gateway = GatewayProcess(env, tmp_path).wait_ready()
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{gateway.url}/v1/batches", timeout=5)
    assert refused.value.code == 401
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=15) == 0
    assert "Traceback" not in gateway.stderr()
