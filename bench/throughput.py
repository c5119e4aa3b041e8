"""Worker throughput vs bare dramatiq, high-latency concurrency, enqueue rate, and bulk
embeddings (jobs/s and Redis bytes per stored result).

Run: python bench/throughput.py [--n 20000] [--slow-n 5000] [--embed-lines 10000]
     python bench/throughput.py --only embeddings   (the embeddings case alone)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import env, lines, measure, peak_rss_mb, start_worker, write_config
from producers.client import Client
from schemas.batch_output import native_line
from workers.protocol.keys import Keys
from workers.redis_server import RedisServer


def bare_dramatiq(url: str, n: int, threads: int, mode: str = "sync") -> float:
    """jobs/s of a no-op dramatiq actor (sync, or async via dramatiq's AsyncIO middleware),
    measured the same way as batchyard's worker."""
    broker = RedisBroker(url=url, namespace="bench")
    pipe_client = redis.Redis.from_url(url)
    for start in range(0, n, 1000):
        pipe = pipe_client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            msg = Message(
                queue_name="noop",
                actor_name="noop",
                args=({"i": i},),
                kwargs={},
                options={"redis_message_id": f"m{i}"},
            )
            pipe.hset("bench:noop.msgs", f"m{i}", msg.encode())
            pipe.rpush("bench:noop", f"m{i}")
        pipe.execute()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("noop_worker.py")),
            url,
            "noop",
            str(threads),
            mode,
        ],
        env=env(url),
    )
    try:
        seconds = measure(lambda: n - int(broker.do_qsize("noop")), n, 300)
    finally:
        proc.terminate()
        proc.wait()
    return n / seconds


def batchyard_worker(
    url: str, n: int, concurrency: int, tmp: Path, latency_ms: float
) -> tuple[float, float]:
    """jobs/s and peak RSS (MB) of one batchyard worker process on a pre-filled queue."""
    config = write_config(tmp / f"mock-{latency_ms}.yaml", latency_ms=latency_ms)
    with Client(url) as client:
        batch_id = client.submit_many(lines(n, f"l{latency_ms}")).batch_id
        proc = start_worker(url, concurrency, config)
        try:
            seconds = measure(lambda: client.batch(batch_id).counts.done, n, 600)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
        assert client.batch(batch_id).counts.completed == n
    return n / seconds, rss


def embedding_lines(n: int, per_line: int) -> list[bytes]:
    """OpenAI batch lines for /v1/embeddings, `per_line` texts each."""
    return [
        orjson.dumps(
            {
                "custom_id": f"emb-{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {
                    "model": "text-embedding-3-small",
                    "input": [f"document {i}.{k} about tides" for k in range(per_line)],
                },
            }
        )
        for i in range(n)
    ]


def embeddings(url: str, n: int, per_line: int, concurrency: int, tmp: Path) -> dict[str, float]:
    """jobs/s of 1,536-dimension embeddings from the 0 ms mock, and what a result costs Redis:
    stored (base64 float32) and as the same answer would weigh with JSON float lists."""
    config = write_config(tmp / "mock-embed.yaml", latency_ms=0)
    with Client(url) as client:
        batch_id = client.submit_many(embedding_lines(n, per_line)).batch_id
        proc = start_worker(url, concurrency, config)
        try:
            seconds = measure(lambda: client.batch(batch_id).counts.done, n, 600)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
        assert client.batch(batch_id).counts.completed == n
        keys = Keys()
        stored = sum(
            int(client.redis.memory_usage(key, samples=0) or 0)
            for key in (keys.stream(batch_id), keys.done(batch_id))
        )
        sample = next(client.iter_results(batch_id))[2]
    packed = len(sample.model_dump_json())
    as_floats = len(orjson.dumps(native_line(sample)))
    return {
        "jobs_s": n / seconds,
        "inputs_s": n * per_line / seconds,
        "rss_mb": rss,
        "redis_bytes": stored / n,
        "json_packed": packed,
        "json_floats": as_floats,
    }


def enqueue_rate(url: str, n: int, tmp: Path) -> float:
    """submit_many jobs/s from a JSONL file."""
    path = tmp / f"in-{n}.jsonl"
    path.write_bytes(b"\n".join(lines(n, f"e{n}")) + b"\n")
    with Client(url) as client:
        t0 = time.perf_counter()
        report = client.submit_file(path)
        seconds = time.perf_counter() - t0
        assert report.enqueued == n
    return n / seconds


def producer_rss(url: str, n: int, tmp: Path) -> float:
    """Peak RSS (MB) of a fresh process that submits an n-line file."""
    path = tmp / f"rss-{n}.jsonl"
    path.write_bytes(b"\n".join(lines(n, f"p{n}")) + b"\n")
    code = (
        "from pathlib import Path\nfrom producers.client import Client\n"
        f"Client({url!r}).submit_file(Path({str(path)!r}))\n"
        "print(next(r.split()[1] for r in open('/proc/self/status') if r.startswith('VmHWM')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env(url), capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--slow-n", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--embed-lines", type=int, default=10_000)
    parser.add_argument("--embed-inputs", type=int, default=10, help="texts per embeddings line")
    parser.add_argument("--only", choices=["embeddings"], help="run this case alone")
    args = parser.parse_args()
    with RedisServer() as server, tempfile.TemporaryDirectory() as d:
        tmp, url = Path(d), server.url
        if args.only == "embeddings":
            print_embeddings(url, args.embed_lines, args.embed_inputs, args.concurrency, tmp)
            return
        base = bare_dramatiq(url, args.n, args.concurrency)
        base_async = bare_dramatiq(url, args.n, args.concurrency, "async")
        ours, rss0 = batchyard_worker(url, args.n, args.concurrency, tmp, 0)
        print(f"0 ms mock, 1 process, concurrency {args.concurrency}, {args.n} jobs:")
        print(f"  bare dramatiq no-op:       {base:8.0f} jobs/s")
        print(f"  bare dramatiq async no-op: {base_async:8.0f} jobs/s")
        print(f"  batchyard worker:          {ours:8.0f} jobs/s  (peak RSS {rss0:.0f} MB)")
        print(f"  ratio to no-op:            {ours / base:8.2f}  (target >= 0.6)")
        print(f"  ratio to async no-op:      {ours / base_async:8.2f}")
        slow, rss = batchyard_worker(url, args.slow_n, 500, tmp, 1000)
        print(f"1 s mock, 1 process, concurrency 500, {args.slow_n} jobs:")
        print(f"  {slow:.0f} jobs/s (target >= 300), peak RSS {rss:.0f} MB (target <= 300)")
        rate = enqueue_rate(url, 100_000, tmp)
        print(f"submit_many 100,000 lines: {rate:.0f} jobs/s (target >= 20,000)")
        small, big = producer_rss(url, 10_000, tmp), producer_rss(url, 100_000, tmp)
        print(f"producer peak RSS: {small:.0f} MB for 10,000 lines, {big:.0f} MB for 100,000 lines")
        print_embeddings(url, args.embed_lines, args.embed_inputs, args.concurrency, tmp)


def print_embeddings(url: str, n: int, per: int, concurrency: int, tmp: Path) -> None:
    """Run the embeddings case and print its figures."""
    emb = embeddings(url, n, per, concurrency, tmp)
    print(f"embeddings, 0 ms mock, 1,536 dimensions, {n} lines x {per} inputs:")
    print(
        f"  {emb['jobs_s']:.0f} jobs/s ({emb['inputs_s']:.0f} inputs/s), "
        f"peak RSS {emb['rss_mb']:.0f} MB"
    )
    print(
        f"  Redis {emb['redis_bytes']:.0f} B per result (stream entry + done marker); "
        f"result JSON {emb['json_packed']:.0f} B packed vs {emb['json_floats']:.0f} B "
        "with float lists"
    )


if __name__ == "__main__":
    main()
