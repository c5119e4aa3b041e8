"""A provider from another package is used with no change to batchyard; tier rules pick models."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from producers.client import Client
from tests.conftest import WorkerPool, cli_env, wait_until

pytestmark = pytest.mark.integration

PLUGIN = '''
from providers.base import Provider, ProviderResponse


class AcmeProvider(Provider):
    """Answers in capitals: the smallest useful third-party adapter."""

    name = "acme"

    async def generate(self, request, model):
        text = request.messages[-1].content.upper()
        return ProviderResponse(text=text, model=model)
'''


def install_package(site: Path) -> None:
    """What `pip install acme-llm` leaves behind: a module and a dist-info with entry points."""
    (site / "acme_llm").mkdir(parents=True)
    (site / "acme_llm" / "__init__.py").write_text(PLUGIN)
    info = site / "acme_llm-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-llm\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[batchyard.providers]\nacme = acme_llm:AcmeProvider\n")


def test_a_third_party_provider_package_is_discovered_and_used(
    tmp_path: Path,
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = tmp_path / "site"
    install_package(site)
    path = write_config({"endpoints": {"acme": {"provider": "acme", "model": "acme-1"}}})
    monkeypatch.setenv("BATCHYARD_CONFIG", str(path))
    env = cli_env(redis_url, BATCHYARD_CONFIG=str(path))
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(site)])
    worker_pool(env, "--concurrency", "4")
    with Client(redis_url) as client:
        line = {"custom_id": "a-1", "messages": [{"role": "user", "content": "make me loud"}]}
        batch_id = client.submit_many([line]).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 30, "the batch")
        (_, _, result), *_ = client.iter_results(batch_id)
    assert (result.status, result.output, result.model) == ("succeeded", "MAKE ME LOUD", "acme-1")


def test_the_tier_rule_picks_each_endpoints_basic_or_advanced_model(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(
        {
            "endpoints": {
                "mock": {"provider": "mock", "models": {"basic": "small", "advanced": "big"}}
            },
            "tier_rule": {"pattern": r"(?i)\b(prove|derive)\b", "min_chars": 200},
        }
    )
    monkeypatch.setenv("BATCHYARD_CONFIG", str(path))
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(path)), "--concurrency", "4")
    rows = [
        {"custom_id": "short", "messages": [{"role": "user", "content": "hi there"}]},
        {"custom_id": "keyword", "messages": [{"role": "user", "content": "Prove it."}]},
        {"custom_id": "long", "messages": [{"role": "user", "content": "word " * 50}]},
        {
            "custom_id": "forced",
            "tier": "basic",
            "messages": [{"role": "user", "content": "prove it"}],
        },
        {
            "custom_id": "named",
            "model": "exact",
            "messages": [{"role": "user", "content": "prove it"}],
        },
    ]
    with Client(redis_url) as client:
        batch_id = client.submit_many(rows).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 30, "the batch")
        models = {r.custom_id: r.model for _, _, r in client.iter_results(batch_id)}
    assert models == {
        "short": "small",
        "keyword": "big",
        "long": "big",
        "forced": "small",
        "named": "exact",
    }
