"""Issue #9 benchmarks: GMN validator throughput, and end-to-end prompts/s with the GMN mock.

Run: python bench/gmn.py [--n 2000] [--invalid-rate 0.4] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import measure, start_worker, write_config
from producers.client import Client
from producers.gmn_cli import GMNReport
from providers.mock_gmn import build_document
from schemas.gmn import validate_gmn, validate_reply, validator_benchmark_document
from schemas.gmn.prompts import GMNConstraints
from workers.redis_server import RedisServer

AGENTS = ["explorer", "trader", "coordinator", "general"]


def per_second(run: Callable[[], object], seconds: float = 2.0) -> float:
    """Calls per second of `run()` over about `seconds`."""
    run()
    count, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        run()
        count += 1
    return count / elapsed


def prompts(n: int) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "custom_id": f"b-{i}",
                "prompt": f"Agent {i} explores a {2 + i % 4}x{2 + i % 3} grid looking for food.",
                "agent_type": AGENTS[i % 4],
            }
        )
        for i in range(n)
    ]


def end_to_end(n: int, invalid_rate: float, concurrency: int) -> tuple[float, dict[str, Any]]:
    """prompts/s through one worker process (first result to last) and the batch's report."""
    with RedisServer() as server, tempfile.TemporaryDirectory() as d:
        config = write_config(
            Path(d) / "gmn.yaml", mode="gmn", gmn_invalid_rate=invalid_rate, seed=1
        )
        with Client(server.url) as client:
            batch_id = client.generate_gmn_batch(prompts(n), rounds=3)
            proc = start_worker(server.url, concurrency, config)
            try:
                seconds = measure(lambda: client.batch(batch_id).counts.done, n, 120)
            finally:
                proc.terminate()
                proc.wait()
            report = GMNReport()
            for _done, _total, items in client.follow_gmn(batch_id):
                for item in items:
                    report.add(item)
    return n / seconds, report.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--invalid-rate", type=float, default=0.4)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    doc = validator_benchmark_document(50)
    text = orjson.dumps(doc)
    assert validate_gmn(text).valid
    print(f"validator, 50-node document ({len(doc['nodes'])} nodes, {len(text):,} bytes):")
    print(f"  from bytes: {per_second(lambda: validate_gmn(text)):8.0f} documents/s")
    print(f"  from dict:  {per_second(lambda: validate_gmn(doc)):8.0f} documents/s")
    reply = f"Here it is:\n```json\n{text.decode()}\n```"
    replies = per_second(lambda: validate_reply(reply))
    print(f"  LLM reply:  {replies:8.0f} replies/s (fenced: extract, then validate)")
    rng = random.Random(0)
    build = lambda: build_document("walk a 5x5 grid", "explorer", GMNConstraints(), rng)  # noqa: E731
    print(f"mock GMN builder (25-state explorer): {per_second(build):8.0f} documents/s")

    rate, report = end_to_end(args.n, args.invalid_rate, args.concurrency)
    rounds = ", ".join(
        f"round {r['round']}: {r['answers']} answers, {r['valid_after_round']:.1%} valid after"
        for r in report["by_round"]
    )
    print(
        f"end to end, 1 worker process, concurrency {args.concurrency}, {args.n} prompts, "
        f"{args.invalid_rate:.0%} invalid first answers, up to 3 rounds:"
    )
    print(f"  {rate:8.0f} prompts/s  ({report['validity']:.1%} valid; {rounds})")


if __name__ == "__main__":
    main()
