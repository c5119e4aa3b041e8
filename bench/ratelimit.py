"""Issue #5: 4 worker processes against a provider enforcing RPM 6,000 / TPM 600,000.

Prints utilisation of the RPM over a measured window (target >= 97%) and the share of 429s
(target <= 0.5%). Run: python bench/ratelimit.py [--seconds 60] [--processes 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import env, lines
from producers.client import Client
from schemas.config import load_config
from tests.conftest import ServerThread
from workers.redis_server import RedisServer
from workers.supervisor import Supervisor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--tpm", type=int, default=600_000)
    args = parser.parse_args()
    fake = ServerThread(rpm=args.rpm, tpm=args.tpm)
    server = fake.server
    try:
        with RedisServer() as redis_server, tempfile.TemporaryDirectory() as d:
            config = Path(d) / "batchyard.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "endpoints": {
                            "fake": {
                                "provider": "openai",
                                "base_url": server.openai_url,
                                "model": "gpt-bench",
                                "rpm": args.rpm,
                                "tpm": args.tpm,
                            }
                        }
                    }
                )
            )
            need = int(args.rpm * (args.seconds / 60 + 0.5))
            sup = Supervisor(args.processes, 64, config=config, env=env(redis_server.url))
            sup.start()
            try:
                with Client(redis_server.url, config=load_config(config)) as client:
                    batch_id = client.submit_many(lines(need)).batch_id
                    while server.requests_arrived == 0:
                        time.sleep(0.01)
                    t0 = time.time()
                    time.sleep(args.seconds + 1)
                    client.cancel(batch_id)
            finally:
                sup.stop()
                sup.shutdown()
    finally:
        fake.stop()
    window = [c for c in server.requests if t0 <= c.arrived < t0 + args.seconds]
    ok = sum(c.status == 200 for c in window)
    limited = sum(c.status == 429 for c in window)
    allowed = args.rpm * args.seconds / 60
    print(
        f"{args.processes} processes, limit {args.rpm} RPM / {args.tpm} TPM, "
        f"{args.seconds:.0f} s window"
    )
    print(
        f"  requests answered 200: {ok} of {allowed:.0f} allowed "
        f"-> utilisation {ok / allowed:.1%} (target >= 97%)"
    )
    print(
        f"  429s: {limited} of {len(window)} -> {limited / max(1, len(window)):.2%} "
        f"(target <= 0.5%)"
    )


if __name__ == "__main__":
    main()
