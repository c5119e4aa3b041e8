"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]


def env(redis_url: str, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("BATCHYARD_")}
    out.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), BATCHYARD_LOG_LEVEL="WARNING", **extra)
    return out


def write_config(path: Path, **mock: object) -> Path:
    path.write_text(yaml.safe_dump({"endpoints": {"mock": {"provider": "mock", **mock}}}))
    return path


def lines(n: int, prefix: str = "r") -> list[bytes]:
    return [
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "m",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"prompt number {i}"}],
                },
            }
        )
        for i in range(n)
    ]


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, in MB."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def start_worker(
    redis_url: str, concurrency: int, config: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.process",
            "--concurrency",
            str(concurrency),
            "--config",
            str(config),
        ],
        env=env(redis_url, **extra_env),
    )


def measure(done: Callable[[], int], total: int, timeout_s: float) -> float:
    """Seconds from the first completion to the last (excludes process start-up)."""
    deadline = time.monotonic() + timeout_s
    while done() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("nothing completed")
        time.sleep(0.005)
    t0 = time.monotonic()
    while done() < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done()}/{total} completed")
        time.sleep(0.005)
    return time.monotonic() - t0
