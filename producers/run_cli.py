"""`batchyard run` and what every command shares: the app's settings and its tracing callback.

`batchyard run` needs none of the other commands, and importing them (the gateway, GMN, the
reports) was ~0.1-0.15 s of the run's start-up CPU on its critical path (#22): `batchyard.launch`
builds the run's app from this module alone; `producers.cli` adds the other commands to the same
kind of app, so `batchyard run` behaves the same both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producers import early_redis
from producers.console import err, out, user_errors
from producers.run import RunInterrupted, run_batch
from workers.tracing import setup_tracing, shutdown_tracing


def new_app() -> typer.Typer:
    """The `batchyard` app with its tracing callback and no commands yet."""
    app = typer.Typer(
        name="batchyard",
        help="Batch LLM jobs on Redis queues: global rate limits, failover, exactly-once results.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(entry)
    return app


def entry(ctx: typer.Context) -> None:
    """Trace as a producer when the OTEL_* environment asks for it (see `setup_tracing`):
    `submit`, `run`, `retry`, `gateway` and `gmn` open a span per request they enqueue, so
    workers continue sampled traces. The exporter is flushed when the command ends. `worker`
    only supervises: its processes set up tracing themselves."""
    command = ctx.invoked_subcommand
    if command is not None and command != "worker" and setup_tracing(f"batchyard-{command}"):
        ctx.call_on_close(shutdown_tracing)


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Endpoints/routes file (YAML or TOML).")
]


def run(
    file: Annotated[Path, typer.Argument(help="Input JSONL (OpenAI batch, Anthropic or native).")],
    output: Annotated[Path, typer.Option("--output", "-o")] = Path(early_redis.DEFAULT_OUTPUT),
    errors: Annotated[Path | None, typer.Option("--errors", "-e")] = None,
    processes: Annotated[int, typer.Option("--processes", "-p", min=1)] = 1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=early_redis.MAX_CONCURRENCY)
    ] = early_redis.DEFAULT_CONCURRENCY,
    config: ConfigOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    grace: Annotated[
        float,
        typer.Option(min=0, help="On Ctrl-C/SIGTERM: seconds calls in flight get to finish."),
    ] = early_redis.DEFAULT_GRACE_S,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Discard an interrupted run's state; start over.")
    ] = False,
    keep_state: Annotated[
        bool,
        typer.Option("--keep-state", help="Keep <output>.batchyard/ (Redis data) when done."),
    ] = False,
) -> None:
    """Run a whole batch here: embedded Redis if REDIS_URL is unset, workers, progress, output.

    Interrupted (Ctrl-C, SIGTERM, kill, reboot), the same command resumes where it stopped."""
    try:
        with user_errors():
            report = run_batch(
                file,
                output,
                errors,
                processes=processes,
                concurrency=concurrency,
                config_path=config,
                timeout_s=timeout,
                console=err,
                grace_s=grace,
                fresh=fresh,
                keep_state=keep_state,
            )
    except RunInterrupted as exc:
        raise typer.Exit(exc.code) from None
    c = report.batch.counts
    errors_path = errors or output.with_name(output.stem + ".errors" + output.suffix)
    out.print(
        f"{report.batch.id}: {c.completed} succeeded, {c.failed} failed of {c.total} "
        f"in {report.seconds:.1f}s ({c.done / max(report.seconds, 1e-9):.0f}/s)\n"
        f"output: {output}\nerrors: {errors_path}"
    )


def run_app() -> typer.Typer:
    """The app `batchyard run` runs: `run` alone."""
    app = new_app()
    app.command()(run)
    return app
