"""The OpenAI shapes a new user meets through the official `openai` SDK, against the gateway as
a real process, real workers and a fake OpenAI upstream: files listed a page at a time, provider
errors in the error file as OpenAI writes them, expired and cancelled requests with OpenAI's
codes and counts, `usage`/`model`/`metadata` on the batch, and output files that can be deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.types import Batch

from tests.conftest import WorkerPool, cli_env
from tests.integration.test_gateway_support import (
    KEY_A,
    KEY_B,
    GatewayProcess,
    chat_line,
    gateway_proc,
    jsonl,
)

pytestmark = pytest.mark.integration
__all__ = ["gateway_proc"]  # fixture used by name

FINISHED = ("completed", "failed", "expired", "cancelled")
UPSTREAM_KEY = "sk-upstream-secret-0123456789"


def sdk(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0, timeout=30)


def new_batch(client: openai.OpenAI, lines: list[dict[str, Any]], **extra: Any) -> Batch:
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window=extra.pop("completion_window", "24h"),
        **extra,
    )


def until(client: openai.OpenAI, batch_id: str, done: Callable[[Batch], bool]) -> Batch:
    deadline = time.monotonic() + 40
    while not done(batch := client.batches.retrieve(batch_id)):
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.05)
    return batch


def lines_of(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in client.files.content(file_id).content.splitlines()]


@pytest.mark.timeout(90)
def test_openai_sdk_sees_openai_shapes_for_files_errors_counts_usage_and_deletes(
    tmp_path: Path,
    redis_url: str,
    fake_server: Callable[..., Any],
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: Callable[..., GatewayProcess],
) -> None:
    upstream = fake_server(api_key=UPSTREAM_KEY)
    upstream.faults.push("bad_request", custom_id="doomed")
    endpoint = {
        "provider": "openai",
        "base_url": upstream.openai_url,
        "api_key": UPSTREAM_KEY,
        "model": "gpt-test",
    }
    config = write_config({"endpoints": {"upstream": endpoint}})
    gateway = gateway_proc(redis_url, "--config", str(config))
    client = sdk(gateway, KEY_A)

    # Files: the SDK's list() pages with `limit`/`after` and sees only the key's own files.
    uploads = [
        client.files.create(file=(f"f{i}.jsonl", jsonl([chat_line("x")])), purpose="batch")
        for i in range(3)
    ]
    newest_first = [f.id for f in reversed(uploads)]
    assert [f.id for f in client.files.list(limit=2)] == newest_first  # auto-paginated
    page = client.files.list(limit=2)
    assert (page.has_more, [f.id for f in page.data]) == (True, newest_first[:2])
    assert [f.id for f in client.files.list(order="asc")] == newest_first[::-1]
    assert [f.id for f in client.files.list(purpose="batch_output")] == []
    assert list(sdk(gateway, KEY_B).files.list()) == []

    # Before any worker runs: one batch whose window ends, one cancelled.
    expiring = new_batch(client, [chat_line("late-1"), chat_line("late-2")], completion_window="1s")
    cancelled = new_batch(client, [chat_line(f"c{i}") for i in range(3)])
    until(client, cancelled.id, lambda b: b.status != "validating")
    client.batches.cancel(cancelled.id)
    assert expiring.expires_at is not None
    until(client, expiring.id, lambda _: time.time() > expiring.expires_at + 1)  # type: ignore[operator]
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--concurrency", "10")

    # Unsent requests of an expired batch end with OpenAI's `batch_expired`,
    expired = until(client, expiring.id, lambda b: b.status in FINISHED)
    assert expired.status == "expired" and expired.error_file_id
    assert {r["error"]["code"] for r in lines_of(client, expired.error_file_id)} == {
        "batch_expired"
    }
    # and cancelled ones are not counted as failed (they are in the error file, as
    # `batch_cancelled`).
    done = until(client, cancelled.id, lambda b: b.status in FINISHED)
    assert done.status == "cancelled" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.failed) == (3, 0)
    assert done.error_file_id
    assert {r["error"]["code"] for r in lines_of(client, done.error_file_id)} == {"batch_cancelled"}

    # A batch with a request the upstream refuses with a 400,
    lines = [chat_line(f"q{i}", f"question {i}") for i in range(4)] + [chat_line("doomed")]
    batch = new_batch(client, lines)
    assert batch.metadata is None  # none was given
    batch = until(client, batch.id, lambda b: b.status in FINISHED)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 1)
    assert batch.model == "m" and batch.metadata is None
    # reports the tokens of its answers as `usage`,
    outputs = lines_of(client, batch.output_file_id or "")
    prompt = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in outputs)
    completion = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in outputs)
    assert batch.usage is not None and prompt > 0 and completion > 0
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (prompt, completion)
    assert batch.usage.total_tokens == prompt + completion
    assert batch.usage.input_tokens_details.cached_tokens == 0
    assert batch.usage.output_tokens_details.reasoning_tokens == 0
    # and writes the refusal as OpenAI does: the upstream's response, `error` null.
    [refused] = lines_of(client, batch.error_file_id or "")
    assert refused["custom_id"] == "doomed" and refused["error"] is None
    response = refused["response"]
    assert response["status_code"] == 400 and response["request_id"]
    assert set(response["body"]["error"]) >= {"message", "type", "param", "code"}
    assert response["body"]["error"]["type"] == "invalid_request_error"
    assert UPSTREAM_KEY not in orjson.dumps(refused).decode()

    # Output and error files can be deleted; then they are gone from the Files API.
    for file_id in (batch.output_file_id, batch.error_file_id):
        assert file_id is not None
        deleted = client.files.delete(file_id)
        assert (deleted.id, deleted.deleted, deleted.object) == (file_id, True, "file")
        with pytest.raises(openai.NotFoundError):
            client.files.content(file_id)
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)
    # An uploaded file leaves the listing when deleted.
    assert client.files.delete(uploads[0].id).deleted
    assert uploads[0].id not in {f.id for f in client.files.list()}
