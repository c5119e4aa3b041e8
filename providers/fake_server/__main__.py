"""`python -m providers.fake_server --port 8089 --rpm 600 --latency-ms 50`: serve until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from providers.fake_server.batch_state import BatchKnobs
from providers.fake_server.faults import FAULT_KINDS
from providers.fake_server.limits import Outage
from providers.fake_server.server import FakeServer


def _rate(text: str) -> tuple[str, float]:
    kind, sep, value = text.partition("=")
    if not sep or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"expected KIND=RATE with KIND in {', '.join(FAULT_KINDS)}"
        )
    try:
        return kind, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate {value!r} is not a number") from None


def parser() -> argparse.ArgumentParser:
    """The command line; every option maps onto a FakeServer argument."""
    p = argparse.ArgumentParser(
        prog="python -m providers.fake_server",
        description="Fake OpenAI / Anthropic / Ollama server with fault injection (127.0.0.1).",
    )
    p.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    p.add_argument("--rpm", type=int, help="enforced requests per window (429 beyond)")
    p.add_argument("--tpm", type=int, help="enforced tokens (prompt + max_tokens) per window")
    p.add_argument("--window-s", type=float, default=60.0, help="limit period (refill or window)")
    p.add_argument(
        "--limit-algorithm",
        choices=["bucket", "window"],
        default="bucket",
        help="token buckets refilled continuously (as OpenAI/Anthropic) or a sliding window",
    )
    p.add_argument(
        "--limit-headers",
        choices=["wire", "openai", "anthropic", "none"],
        default="wire",
        help="rate-limit headers on every answer: the wire's vendor's, a named vendor's, none",
    )
    p.add_argument(
        "--max-in-flight", type=int, help="answer 503 (no headers) above this many at once"
    )
    p.add_argument(
        "--outage-s",
        type=float,
        help="answer 429 to everything for this long from the first request, then recover",
    )
    p.add_argument("--outage-retry-after-s", type=float, default=20.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-jitter-ms", type=float, default=0.0)
    p.add_argument(
        "--fault-rate",
        type=_rate,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="e.g. server_error=0.1 (repeatable)",
    )
    p.add_argument("--seed", type=int, help="replay the same random faults")
    p.add_argument("--api-key", help="require this key (401 otherwise)")
    p.add_argument("--models", help="comma-separated models that exist (404 for others)")
    p.add_argument("--reply", help="fixed reply text (default: echo the last user message)")
    p.add_argument("--access-log", action="store_true", help="log each request")
    p.add_argument("--batch-delay-s", type=float, default=0.0, help="vendor batch run time")
    p.add_argument(
        "--batch-never-finish", action="store_true", help="vendor batches end only by cancel"
    )
    p.add_argument(
        "--batch-fail-fraction", type=float, default=0.0, help="share of batch lines failed"
    )
    p.add_argument("--batch-cancel-latency-s", type=float, default=0.0)
    return p


async def serve(args: argparse.Namespace) -> None:
    """Run the server until Ctrl-C or SIGTERM."""
    server = FakeServer(
        port=args.port,
        rpm=args.rpm,
        tpm=args.tpm,
        limit_window_s=args.window_s,
        limit_algorithm=args.limit_algorithm,
        limit_headers=args.limit_headers,
        max_in_flight=args.max_in_flight,
        outage=Outage(args.outage_s, args.outage_retry_after_s) if args.outage_s else None,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        seed=args.seed,
        api_key=args.api_key,
        models=args.models.split(",") if args.models else None,
        access_log=args.access_log,
        batches=BatchKnobs(
            delay_s=args.batch_delay_s,
            never_finish=args.batch_never_finish,
            fail_fraction=args.batch_fail_fraction,
            cancel_latency_s=args.batch_cancel_latency_s,
        ),
    )
    server.faults.reply = args.reply
    if args.fault_rate:
        server.faults.set_rates(dict(args.fault_rate), seed=args.seed)
    await server.start()
    print(
        f"fake provider server on {server.url} "
        f"(OpenAI base_url {server.openai_url}); Ctrl-C to stop",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parser().parse_args(argv)
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
