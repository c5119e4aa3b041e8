"""The `batchyard` command line."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from producers.client import Client, FailedRequest
from producers.collect import Format, collect
from producers.console import JsonOpt, err, out, print_report, user_errors
from producers.gateway_cli import gateway as gateway_cmd
from producers.gmn_cli import gmn_app
from producers.progress import describe
from producers.run_cli import ConfigOpt, new_app, run
from producers.structured_report import StructuredReport
from producers.structured_report import render as render_report
from schemas.config import AppConfig, load_config
from schemas.settings import Settings
from workers.lifetime import SignalLatch
from workers.logs import setup_logging
from workers.protocol.lanes import Priority
from workers.protocol.learned import FIELDS as LEARNED_FIELDS
from workers.protocol.learned import learned, scan_pattern, show, state_keys
from workers.supervisor import Supervisor

app = new_app()
app.command(name="gateway")(gateway_cmd)
app.command()(run)


def _settings(config: Path | None) -> Settings:
    settings = Settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    return settings


def _client(config: Path | None) -> Client:
    settings = _settings(config)
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set (use `batchyard run` for an embedded Redis)")
    return Client(settings=settings)


@app.command()
def submit(
    file: Path,
    config: ConfigOpt = None,
    route: Annotated[str | None, typer.Option(help="Named route from the config.")] = None,
    completion_window: Annotated[
        float | None, typer.Option(help="Seconds until unfinished requests expire.")
    ] = None,
    batch_id: Annotated[
        str | None, typer.Option(help="Choose the id (e.g. to start `collect --follow` first).")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="USD; when spent, remaining requests end unsent.")
    ] = None,
    priority: Annotated[
        Priority,
        typer.Option(help="high: ahead of normal batches; low: only when nothing else waits."),
    ] = "normal",
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="Only accept lines for this endpoint (e.g. /v1/embeddings), as OpenAI does."
        ),
    ] = None,
) -> None:
    """Enqueue a JSONL file as a new batch and print its id."""
    with user_errors(), _client(config) as client:
        if batch_id is not None:
            _check_new_id(client, batch_id)
        report = client.submit_file(
            file,
            route=route,
            completion_window_s=completion_window,
            batch_id=batch_id,
            budget_usd=budget,
            priority=priority,
            endpoint=endpoint,
        )
    if report.invalid:
        err.print(f"[yellow]{report.invalid} invalid line(s) recorded as errors[/yellow]")
    out.print(report.batch_id)


def _check_new_id(client: Client, batch_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", batch_id):
        raise ValueError(f"--batch-id {batch_id!r}: use 1-100 letters, digits, _ . -")
    if client.redis.exists(client.keys.batch(batch_id)):
        raise ValueError(f"--batch-id {batch_id!r}: a batch with this id exists")


@app.command()
def status(batch_id: str, config: ConfigOpt = None) -> None:
    """Counts, rate and ETA of a batch."""
    with user_errors(), _client(config) as client:
        out.print(describe(client.batch(batch_id)))


providers_app = typer.Typer(help="Configured endpoints: limits, breaker state, health.")
app.add_typer(providers_app, name="providers")
app.add_typer(gmn_app, name="gmn")


@providers_app.callback(invoke_without_command=True)
def providers_list(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """List endpoints with model, limits, breaker state, success rate and latency."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        settings = _settings(config)
        app_config = load_config(settings.config)
        snapshots = {}
        learned_now: dict[str, tuple[str, str]] = {}
        if settings.redis_url:
            with Client(settings=settings, config=app_config) as client:
                snapshots = client.health(list(app_config.endpoints))
                learned_now = _learned(client, app_config)
    headers = (
        "endpoint",
        "provider",
        "models",
        "rpm",
        "tpm",
        "conc",
        "breaker",
        "ok %",
        "p50 ms",
        "p95 ms",
        "ok/fail",
        "learned requests",
        "learned tokens",
    )
    table = Table(*headers)
    for name, ep in app_config.endpoints.items():
        models = "/".join(filter(None, [ep.model_for("basic"), ep.models.get("advanced")]))
        snap = snapshots.get(name)
        rate = snap.success_rate if snap else None
        table.add_row(
            name,
            ep.provider,
            models or "-",
            _n(ep.rpm),
            _n(ep.tpm),
            _n(ep.max_concurrency),
            snap.state if snap else "-",
            f"{rate:.1%}" if rate is not None else "-",
            _n(snap.p50_ms if snap else None),
            _n(snap.p95_ms if snap else None),
            f"{snap.total_ok}/{snap.total_fail}" if snap else "-",
            *learned_now.get(name, ("-", "-")),
        )
    out.print(table)
    routes = "; ".join(
        f"{k}: {' > '.join(h.endpoint for h in v)}" for k, v in app_config.routes.items()
    )
    out.print(f"routes: {routes}")


def _learned(client: Client, config: AppConfig) -> dict[str, tuple[str, str]]:
    """What the workers learned of each endpoint's buckets, per model, as table cells."""
    out: dict[str, tuple[str, str]] = {}
    now_ms = time.time() * 1000
    for name in config.endpoints:
        prefix = client.keys.limit(name, "").state
        scan = client.redis.scan_iter(match=scan_pattern(prefix), count=200)
        states = state_keys(scan, prefix)
        cells: tuple[list[str], list[str]] = ([], [])
        for key in states:
            found = learned(client.redis.hmget(key, list(LEARNED_FIELDS)), now_ms)
            for cell, bucket in zip(cells, found, strict=True):
                if bucket is not None:
                    cell.append(f"{key[len(prefix) :]}: {show(bucket)}")
        out[name] = ("\n".join(cells[0]) or "-", "\n".join(cells[1]) or "-")
    return out


@providers_app.command("check")
def providers_check(config: ConfigOpt = None) -> None:
    """Call every endpoint's health check once; exit 1 if any is down."""
    from providers.registry import check_config
    from workers.checks import check_endpoints

    with user_errors():
        app_config = load_config(_settings(config).config)
        check_config(app_config)
        results = asyncio.run(check_endpoints(app_config))
    for name, status in results.items():
        mark = "[green]ok[/green]" if status.ok else "[red]down[/red]"
        out.print(f"{name:20s} {mark}  {status.latency_ms:7.1f} ms  {status.detail}")
    if not all(s.ok for s in results.values()):
        raise typer.Exit(1)


def _n(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


@app.command(name="report")
def report_cmd(
    batch_id: str,
    as_json: JsonOpt = False,
    top: Annotated[int, typer.Option(min=1, help="Errors to list.")] = 10,
    config: ConfigOpt = None,
) -> None:
    """Structured output of a batch: validity per round, the most frequent errors, tokens and
    cost per valid answer (json_schema, plugin validators and GMN alike)."""
    summary = StructuredReport()
    with user_errors(), _client(config) as client:
        for _, _, result in client.iter_results(batch_id):
            summary.add(result)
    print_report(summary.to_dict(top), as_json, render_report)


@app.command()
def cancel(batch_id: str, config: ConfigOpt = None) -> None:
    """Cancel a batch: queued requests end `cancelled` without a provider call."""
    with user_errors(), _client(config) as client:
        out.print(f"{batch_id}: {client.cancel(batch_id).value}")


@app.command()
def failures(
    batch_id: str,
    ids: Annotated[bool, typer.Option("--ids", help="List the custom_ids too.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Requests that ended in error, counted by cause and endpoint kind (the dead letters
    `retry` re-runs)."""
    with user_errors(), _client(config) as client:
        failed = client.failed_requests(batch_id)
    if not failed:
        out.print("no failed requests")
    by_code: dict[str, list[FailedRequest]] = {}
    for item in failed:
        by_code.setdefault(item.code, []).append(item)
    for code, items in sorted(by_code.items(), key=lambda kv: -len(kv[1])):
        kinds = Counter(item.kind for item in items)
        split = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        # Plain text: custom ids are the user's, and "[embeddings]" is not rich markup.
        out.print(f"{len(items):8d}  {code}  ({split})", markup=False, highlight=False)
        if ids:
            for item in sorted(items, key=lambda i: i.key):
                out.print(f"          {item.key}  [{item.kind}]", markup=False, highlight=False)


@app.command()
def retry(
    batch_id: str,
    failed: Annotated[
        bool, typer.Option("--failed", help="Re-run requests that ended in error.")
    ] = False,
    completion_window: Annotated[
        float | None, typer.Option(help="New window (seconds) for the re-run requests.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Re-submit failed requests into the same batch with a fresh attempt budget."""
    if not failed:
        err.print("[red]error:[/red] say what to retry: --failed")
        raise typer.Exit(2)
    with user_errors(), _client(config) as client:
        n = client.retry_failed(batch_id, completion_window_s=completion_window)
    out.print(f"{batch_id}: {n} request(s) re-queued")


@app.command(name="collect")
def collect_cmd(
    batch_id: str,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("results.jsonl"),
    errors: Annotated[Path | None, typer.Option("--errors", "-e")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for more.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="openai, anthropic or native")] = "openai",
    config: ConfigOpt = None,
) -> None:
    """Write results not yet collected to the output/error files (resumable)."""
    formats: dict[str, Format] = {"openai": "openai", "anthropic": "anthropic", "native": "native"}
    if fmt not in formats:
        err.print(f"[red]error:[/red] --format must be openai, anthropic or native, got {fmt!r}")
        raise typer.Exit(2)
    fmt_t = formats[fmt]
    with user_errors(), _client(config) as client:
        report = collect(client, batch_id, output, errors, follow=follow, fmt=fmt_t)
    out.print(f"wrote {report.succeeded} results and {report.errored} errors")


@app.command()
def worker(
    processes: Annotated[int, typer.Option("--processes", "-p", min=1)] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=5000)] = 64,
    grace: Annotated[float, typer.Option(help="Seconds in-flight jobs get on SIGTERM.")] = 30.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Start N supervised worker processes; restart any that dies; drain on SIGTERM."""
    with user_errors():  # a wrong BATCHYARD_* value is one line, as in the other commands
        settings = Settings()
    setup_logging(settings)
    if not settings.redis_url:
        err.print("[red]error:[/red] REDIS_URL is not set")
        raise typer.Exit(2)
    sup = Supervisor(
        processes,
        concurrency,
        config=config or settings.config,
        grace_s=grace,
        metrics_port=metrics_port,
    )
    with user_errors():
        sup.preflight()
    sup.stop_on(SignalLatch().install())
    logging.getLogger("batchyard").info("supervising %d worker process(es)", processes)
    sup.run()
    if sup.failed:
        err.print(f"[red]error:[/red] {sup.failed}")
        raise typer.Exit(2)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
