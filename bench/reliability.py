"""Memory and storage over a full 100,000-request batch: producer and worker RSS, Redis bytes.

    python bench/reliability.py [--requests 100000] [--processes 2] [--concurrency 100]

Runs the mock provider (no latency) on a private redis-server; bounded by --timeout-s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producers.client import Client  # noqa: E402
from workers.redis_server import RedisServer  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()
    n = args.requests
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "batchyard.yaml"
        config.write_text(yaml.safe_dump({"endpoints": {"mock": {"provider": "mock"}}}))
        r = redis.Redis.from_url(server.url)
        base_mem = int(r.info("memory")["used_memory"])
        rss0 = rss_mib(os.getpid())
        started = time.monotonic()
        with Client(server.url) as client:
            lines = (
                {"custom_id": f"b-{i:06d}", "messages": [{"role": "user", "content": f"q {i}"}]}
                for i in range(n)
            )
            batch_id = client.submit_many(lines).batch_id
            submitted_s = time.monotonic() - started
            producer_mib = rss_mib(os.getpid()) - rss0
            queued_mem = int(r.info("memory")["used_memory"])
            env = {
                **os.environ,
                "REDIS_URL": server.url,
                "BATCHYARD_CONFIG": str(config),
                "PYTHONPATH": str(ROOT),
                "BATCHYARD_LOG_LEVEL": "WARNING",
            }
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "batchyard",
                    "worker",
                    "-p",
                    str(args.processes),
                    "--concurrency",
                    str(args.concurrency),
                ],
                env=env,
                start_new_session=True,
            )
            samples: list[float] = []
            deadline = time.monotonic() + args.timeout_s
            try:
                while not client.batch(batch_id).finished and time.monotonic() < deadline:
                    samples.append(sum(rss_mib(p) for p in children(worker.pid)) or 0.0)
                    time.sleep(0.5)
                ran_s = time.monotonic() - started - submitted_s
                batch = client.batch(batch_id)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
        done_mem = int(r.info("memory")["used_memory"])
        r.close()
    live = [s for s in samples if s > 0]
    print(f"requests                      {n}")
    print(f"completed / failed            {batch.counts.completed} / {batch.counts.failed}")
    print(f"submit time (s)               {submitted_s:.1f}")
    print(f"run time (s)                  {ran_s:.1f}  ({n / max(ran_s, 1e-9):.0f} req/s)")
    print(f"producer RSS growth (MiB)     {producer_mib:.1f}")
    print(
        f"worker RSS, all children (MiB) first {live[0] if live else 0:.0f}  "
        f"peak {max(live, default=0):.0f}  last {live[-1] if live else 0:.0f}"
    )
    print(f"Redis bytes per queued req    {(queued_mem - base_mem) / n:.0f}")
    print(f"Redis bytes per result        {(done_mem - base_mem) / n:.0f}  (queue drained)")


if __name__ == "__main__":
    main()
