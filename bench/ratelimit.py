"""Rate limits against a fake provider that enforces them like OpenAI and Anthropic do (issue #17).

One case per run, so each can be taken under the CPU lock on its own:

  python bench/ratelimit.py --case utilisation [--processes 4] [--seconds 60]
      configured 6,000 RPM / 600,000 TPM; 200s over a 60 s window vs what the cap allows
      (target >= 97%), share of 429s (target <= 0.5%)   [issue #5]
  python bench/ratelimit.py --case learned-openai --processes 3
      600 RPM / 60,000 TPM token buckets announced in x-ratelimit-*, nothing configured,
      1,500 requests: all succeed, 429s <= 2% of what the server saw, wall <= 1.2x the floor
      (600 at once, then 10/s: 90 s)
  --case learned-anthropic   the same with anthropic-ratelimit-* (Anthropic wire and adapter)
  --case capped-600          the same server, `rpm: 600` configured: 429s <= 0.5%, wall <= 1.2x
                             the floor, which here is the cap's: never above 600 in any 60 s
                             (600 at once, 600 a minute later, 300 a minute after: 120 s; the
                             server alone would take 90 s, `server_floor_s`)
  --case capped-300          `rpm: 300` configured, 600 requests: never above 300 in any 60 s
  --case outage              429 with retry-after: 20 to everything for 60 s, then recovery;
                             200 requests, 1 h window: 200 succeed, <= 1 probe per 20 s paused
  --case overload            no headers, 503 above 32 in flight: in flight settles at 32 +- 8,
                             errors < 2%, every request succeeds

Every case prints one line of figures (and appends it as JSON to --json PATH when given).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import env
from producers.client import Client
from providers.fake_server import FakeServer, Outage, max_in_window
from schemas.config import load_config
from tests.conftest import ServerThread
from workers.redis_server import RedisServer
from workers.supervisor import Supervisor

CASES = (
    "utilisation",
    "learned-openai",
    "learned-anthropic",
    "capped-600",
    "capped-300",
    "outage",
    "overload",
)


@dataclass
class Case:
    """One scenario: the server, the endpoint config, the batch, and its theoretical floor."""

    name: str
    server: dict[str, Any]
    endpoint: dict[str, Any]
    requests: int
    max_tokens: int = 80
    window_s: float | None = None
    #: Seconds a perfect client needs (the server's limits and the configured cap), for
    #: wall / floor.
    floor_s: float = 0.0
    #: Seconds the server's limits alone need.
    server_floor_s: float = 0.0
    timeout_s: float = 600.0


def bucket_floor_s(n: int, cost: int, rpm: int, tpm: int | None) -> float:
    """A full bucket at once, then the refill rate: the fastest any client can be served."""
    need = [(n - rpm) / (rpm / 60)]
    if tpm is not None:
        need.append((n * cost - tpm) / (tpm / 60))
    return max(0.0, *need)


def cap_floor_s(n: int, cap: int) -> float:
    """Never more than `cap` in any 60 s: `cap` at once, then `cap` a minute later..."""
    return 60.0 * math.ceil(n / cap - 1)


def make_case(args: argparse.Namespace) -> Case:
    """The scenario named by --case, sized by the other options."""
    latency = {"latency_ms": args.latency_ms, "latency_jitter_ms": args.latency_ms / 2}
    rpm, tpm = 600, 60_000
    cost = 6 + args.max_tokens  # "prompt number NNNN" is ~5 tokens by the 4-chars rule
    bucket = {"rpm": rpm, "tpm": tpm, "limit_algorithm": "bucket", **latency}
    openai: dict[str, Any] = {"provider": "openai", "model": "gpt-bench", "api_key": "sk-bench"}
    anthropic: dict[str, Any] = {
        "provider": "anthropic",
        "model": "claude-bench",
        "api_key": "sk-bench",
    }
    n = args.requests
    match args.case:
        case "utilisation":
            u_rpm, u_tpm = 6000, 600_000
            server = {"rpm": u_rpm, "tpm": u_tpm, "limit_algorithm": args.server}
            need = int(u_rpm * (args.seconds / 60 + 0.5))
            return Case(
                "utilisation",
                server,
                {**openai, "rpm": u_rpm, "tpm": u_tpm},
                n or need,
                max_tokens=16,
                timeout_s=args.seconds + 1,
            )
        case "learned-openai" | "learned-anthropic" | "capped-600":
            n = n or 1500
            endpoint = anthropic if args.case == "learned-anthropic" else openai
            if args.case == "capped-600":
                endpoint = {**endpoint, "rpm": 600}
            server_floor = bucket_floor_s(n, cost, rpm, tpm)
            floor = max(server_floor, cap_floor_s(n, 600) if args.case == "capped-600" else 0)
            return Case(
                args.case,
                bucket,
                endpoint,
                n,
                args.max_tokens,
                None,
                floor,
                server_floor,
                3 * floor + 120,
            )
        case "capped-300":
            n = n or 600
            server_floor = bucket_floor_s(n, cost, rpm, tpm)
            floor = max(server_floor, cap_floor_s(n, 300))
            return Case(
                args.case,
                bucket,
                {**openai, "rpm": 300},
                n,
                args.max_tokens,
                None,
                floor,
                server_floor,
                3 * floor + 120,
            )
        case "outage":
            n = n or 200
            server = {"outage": Outage(duration_s=60, retry_after_s=20), **latency}
            return Case(args.case, server, openai, n, args.max_tokens, 3600, 60.0, 60.0, 400)
        case "overload":
            n = n or 3000
            server = {"max_in_flight": 32, "latency_ms": 200, "latency_jitter_ms": 50}
            floor = n / 32 * 0.225
            return Case(
                args.case, server, openai, n, args.max_tokens, None, floor, floor, 5 * floor + 60
            )
    raise SystemExit(f"unknown case {args.case!r} (known: {', '.join(CASES)})")


def lines(n: int, max_tokens: int) -> list[bytes]:
    """n chat requests of ~6 prompt tokens plus `max_tokens` (what a TPM bucket charges)."""
    return [
        orjson.dumps(
            {
                "custom_id": f"r-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "m",
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"prompt number {i:04d}"}],
                },
            }
        )
        for i in range(n)
    ]


def run(case: Case, processes: int, concurrency: int) -> dict[str, Any]:
    """Run one case end to end and return its figures."""
    fake = ServerThread(**case.server)
    server: FakeServer = fake.server
    base_url = server.url if case.endpoint["provider"] == "anthropic" else server.openai_url
    policy = {"backoff_base_s": 0.05, "backoff_max_s": 2.0}
    try:
        with RedisServer() as redis_server, tempfile.TemporaryDirectory() as d:
            config = Path(d) / "batchyard.yaml"
            endpoint = {**case.endpoint, "base_url": base_url}
            config.write_text(yaml.safe_dump({"endpoints": {"fake": endpoint}, "policy": policy}))
            sup = Supervisor(processes, concurrency, config=config, env=env(redis_server.url))
            sup.start()
            try:
                with Client(redis_server.url, config=load_config(config)) as client:
                    report = client.submit_many(
                        lines(case.requests, case.max_tokens), completion_window_s=case.window_s
                    )
                    while server.requests_arrived == 0:
                        time.sleep(0.01)
                    t0 = time.time()
                    deadline = time.monotonic() + case.timeout_s
                    while time.monotonic() < deadline:
                        batch = client.batch(report.batch_id)
                        if batch.finished:
                            break
                        time.sleep(0.1)
                    else:
                        client.cancel(report.batch_id)
                    t_end = time.time()
                    batch = client.batch(report.batch_id)
                    failures = {k: len(v) for k, v in client.failures(report.batch_id).items()}
            finally:
                sup.stop()
                sup.shutdown()
    finally:
        fake.stop()
    return figures(case, server, batch.counts.model_dump(), failures, t0, t_end, processes)


def figures(
    case: Case,
    server: FakeServer,
    counts: dict[str, Any],
    failures: dict[str, int],
    t0: float,
    t_end: float,
    processes: int,
) -> dict[str, Any]:
    """What the issue's acceptance asks about, read from the server's log and counters."""
    calls = list(server.requests)
    seen = len(calls)
    limited = sum(c.status == 429 for c in calls)
    busy = sum(c.status == 503 for c in calls)
    ok_ts = [c.ts for c in calls if c.status == 200]
    wall = (max(ok_ts) if ok_ts else t_end) - t0
    out: dict[str, Any] = {
        "case": case.name,
        "processes": processes,
        "requests": case.requests,
        "succeeded": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
        "failures": failures,
        "server_seen": seen,
        "429": limited,
        "429_share": round(limited / max(1, seen), 4),
        "503": busy,
        "wall_s": round(wall, 1),
        "floor_s": round(case.floor_s, 1),
        "server_floor_s": round(case.server_floor_s, 1),
        "wall_over_floor": round(wall / case.floor_s, 2) if case.floor_s else None,
        "peak_in_flight": server.limits.stats.max_in_flight,
        "max_sent_in_60s": max_in_window((c.arrived for c in calls), 60.0),
    }
    if case.name == "utilisation":
        seconds = case.timeout_s - 1
        window = [c for c in calls if t0 <= c.arrived < t0 + seconds]
        ok = sum(c.status == 200 for c in window)
        # what the configured cap allows (never more in any 60 s); a bucket server alone
        # would let a full bucket more through, but the cap is the limit here
        allowed = case.endpoint["rpm"] * seconds / 60
        out["utilisation"] = round(ok / allowed, 4)
        out["429_share"] = round(sum(c.status == 429 for c in window) / max(1, len(window)), 4)
        out["server_algorithm"] = case.server["limit_algorithm"]
    if case.name == "outage":
        first = min((c.ts for c in calls if c.status == 429), default=None)
        if first is not None:
            paused = [c.arrived for c in calls if first + 0.5 < c.arrived < t0 + 60]
            out["probes_while_paused"] = len(paused)
            out["max_probes_per_20s"] = max_in_window(paused, 20.0)
    if case.name == "overload":
        middle = (t0 + wall / 4, t0 + 3 * wall / 4)
        out["mean_in_flight_middle_half"] = round(server.limits.stats.mean_in_flight(*middle), 1)
        out["503_share"] = round(busy / max(1, seen), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=CASES, default="utilisation")
    parser.add_argument("--processes", type=int, default=None, help="default: 4 (utilisation), 3")
    parser.add_argument("--concurrency", type=int, default=64, help="per process")
    parser.add_argument("--requests", type=int, default=0, help="default: the issue's number")
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="utilisation window")
    parser.add_argument(
        "--server",
        choices=["bucket", "window"],
        default="bucket",
        help="utilisation: how the server enforces its limit",
    )
    parser.add_argument("--json", type=Path, help="append the figures to this JSONL file")
    args = parser.parse_args()
    processes = args.processes or (4 if args.case == "utilisation" else 3)
    case = make_case(args)
    result = run(case, processes, args.concurrency)
    print(" ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    if args.json is not None:
        with args.json.open("ab") as f:
            f.write(orjson.dumps({**result, "at": time.time()}) + b"\n")


if __name__ == "__main__":
    main()
