"""Batch offload through the gateway (#21 acceptance 5): an OpenAI SDK user picks a route
through a `mode: batch` endpoint with `metadata: {"batchyard_route": ...}`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from providers.fake_server.batch_state import BatchKnobs
from tests.conftest import WorkerPool, cli_env
from tests.integration.test_gateway_openai_compat import lines_of, new_batch, sdk, until
from tests.integration.test_gateway_support import KEY_A, GatewayProcess, chat_line, gateway_proc

pytestmark = pytest.mark.integration
__all__ = ["gateway_proc"]  # fixture used by name

FINISHED = ("completed", "failed", "expired", "cancelled")


@pytest.mark.timeout(90)
def test_sdk_user_gets_the_offload_with_metadata_batchyard_route(
    redis_url: str,
    fake_server: Callable[..., Any],
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: Callable[..., GatewayProcess],
) -> None:
    upstream = fake_server(batches=BatchKnobs(delay_s=0.2))
    live = {"provider": "openai", "base_url": upstream.openai_url, "model": "m"}
    offload = {
        **live,
        "mode": "batch",
        "batch": {"max_wait_s": 0.2, "poll_s": 0.2, "lease_s": 2},
    }
    config = write_config(
        {
            "endpoints": {"live": live, "vendor-batch": offload},
            "routes": {"default": ["live"], "patient": ["vendor-batch", "live"]},
        }
    )
    gateway = gateway_proc(redis_url, "--config", str(config))
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--concurrency", "10")
    client = sdk(gateway, KEY_A)

    # An unknown route is refused up front, naming the field.
    with pytest.raises(openai.BadRequestError) as refused:
        new_batch(client, [chat_line("x")], metadata={"batchyard_route": "nope"})
    assert "metadata.batchyard_route" in str(refused.value)

    rows = [chat_line(f"p{i}", f"patient {i}") for i in range(10)]
    batch = new_batch(client, rows, metadata={"batchyard_route": "patient"})
    done = until(client, batch.id, lambda b: b.status in FINISHED)
    assert done.status == "completed" and done.output_file_id is not None
    out = lines_of(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"p{i}" for i in range(10))
    assert all(line["response"]["status_code"] == 200 for line in out)
    # It went through the vendor's Batch API, not live calls.
    assert upstream.calls(path="/v1/chat/completions") == []
    assert upstream.batches.lines_done == 10
