"""Issue #8 benchmark: what the HTTP gateway adds to a request's latency.

Runs redis-server, one worker process (mock provider with fixed latency) and `batchyard
gateway`, then fires POST /v1/jobs?wait=30 at a given concurrency. For each job:

    overhead = HTTP latency seen by the client - (result finished_at - enqueued_at)

i.e. everything but queueing and execution in the worker: HTTP, auth, rate limit, validation,
the enqueue round trips, the result notification and the response.

Run: python bench/gateway.py [--jobs 2000] [--concurrency 200] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import env, peak_rss_mb, start_worker, write_config
from producers.gateway.auth import hash_token
from workers.redis_server import RedisServer, free_port

TOKEN = "sk-bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(url: str, config: Path, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    extra = {
        "BATCHYARD_CONFIG": str(config),
        "BATCHYARD_GATEWAY_KEYS": f"bench:{hash_token(TOKEN)}",
        "BATCHYARD_GATEWAY_RATE_PER_MIN": "0",
        "BATCHYARD_GATEWAY_STORAGE_DIR": str(tmp / "files"),
    }
    args = [sys.executable, "-m", "batchyard", "gateway", "--port", str(port)]
    return subprocess.Popen(args, env=env(url, **extra))


async def ready(session: aiohttp.ClientSession, base: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not start")
        await asyncio.sleep(0.1)


async def run_jobs(
    session: aiohttp.ClientSession, base: str, n: int, concurrency: int
) -> tuple[list[tuple[float, float]], float]:
    """(latency_s, overhead_s) per job, and the wall time of the whole run."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def one(i: int) -> tuple[float, float]:
        body = {"messages": [{"role": "user", "content": f"job {i}"}], "max_tokens": 16}
        async with gate:
            started = time.perf_counter()
            async with session.post(f"{base}/v1/jobs?wait=30", json=body, headers=headers) as r:
                job: dict[str, Any] = await r.json()
            latency = time.perf_counter() - started
        if r.status != 200 or job["status"] != "succeeded":
            raise RuntimeError(f"job {i}: HTTP {r.status} {job}")
        t = job["result"]["timings"]
        return latency, latency - (t["finished_at"] - t["enqueued_at"])

    started = time.perf_counter()
    out = await asyncio.gather(*(one(i) for i in range(n)))
    return list(out), time.perf_counter() - started


def report(label: str, samples: list[tuple[float, float]], wall_s: float) -> None:
    latency = [s[0] * 1000 for s in samples]
    overhead = [s[1] * 1000 for s in samples]
    print(
        f"{label}: {len(samples)} jobs in {wall_s:.2f}s ({len(samples) / wall_s:.0f} jobs/s)\n"
        f"  latency  ms  p50 {pct(latency, 0.5):7.1f}  p95 {pct(latency, 0.95):7.1f}  "
        f"p99 {pct(latency, 0.99):7.1f}\n"
        f"  overhead ms  p50 {pct(overhead, 0.5):7.1f}  p95 {pct(overhead, 0.95):7.1f}  "
        f"p99 {pct(overhead, 0.99):7.1f}  mean {statistics.fmean(overhead):.1f}"
    )


async def bench(base: str, jobs: int, concurrency: int, pids: dict[str, int]) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await ready(session, base)
        await run_jobs(session, base, min(jobs, 200), concurrency)  # warm-up
        samples, wall = await run_jobs(session, base, 200, 1)
        report("sequential (concurrency 1)", samples, wall)
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        samples, wall = await run_jobs(session, base, jobs, concurrency)
        report(f"concurrency {concurrency}", samples, wall)
        used = {name: (cpu_s(pid) - before[name]) * 1000 / jobs for name, pid in pids.items()}
        print("  CPU ms per job: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--worker-concurrency", type=int, default=250)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir, RedisServer() as server:
        tmp = Path(tmp_dir)
        config = write_config(tmp / "mock.yaml", latency_ms=args.latency_ms)
        port = free_port()
        worker = start_worker(server.url, args.worker_concurrency, config)
        gateway = start_gateway(server.url, config, port, tmp)
        try:
            print(
                f"mock latency {args.latency_ms:.0f} ms, 1 worker process "
                f"(concurrency {args.worker_concurrency}), 1 gateway process"
            )
            pids = {
                "gateway": gateway.pid,
                "worker": worker.pid,
                "redis": server.proc.pid if server.proc else 0,
            }
            base = f"http://127.0.0.1:{port}"
            asyncio.run(bench(base, args.jobs, args.concurrency, pids))
            print(f"gateway peak RSS {peak_rss_mb(gateway.pid):.0f} MB")
        finally:
            for proc in (gateway, worker):
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
