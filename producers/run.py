"""`batchyard run`: embedded Redis (if needed), workers, submit, progress, collect, clean up."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from producers.client import Client
from producers.collect import CollectReport, collect
from producers.progress import pace
from schemas.batch import Batch
from schemas.config import load_config
from schemas.settings import Settings
from workers.redis_server import RedisServer
from workers.supervisor import Supervisor, preflight


class RunFailed(RuntimeError):
    """The one-command run could not finish (workers would not start, or a timeout)."""


@dataclass
class RunReport:
    """Outcome of `run_batch`."""

    batch: Batch
    collected: CollectReport
    seconds: float


@dataclass
class LocalWorkers:
    """Where a local run's Redis is and who supervises its worker processes."""

    url: str
    supervisor: Supervisor


@contextmanager
def local_workers(
    settings: Settings, *, processes: int, concurrency: int, console: Console
) -> Iterator[LocalWorkers]:
    """REDIS_URL's Redis (else an embedded one) and N supervised workers, all stopped on exit."""
    preflight(settings.config)  # a config error is one line now, not N crashing children later
    with ExitStack() as stack:
        url = settings.redis_url
        if not url:
            server = stack.enter_context(RedisServer())
            url = server.url
            console.print(f"[dim]embedded redis on {url}[/dim]")
        env = {
            "REDIS_URL": url,
            "BATCHYARD_LOG_LEVEL": os.environ.get("BATCHYARD_LOG_LEVEL", "WARNING"),
        }
        supervisor = Supervisor(processes, concurrency, config=settings.config, env=env)
        runner = threading.Thread(target=supervisor.run, name="supervisor", daemon=True)
        runner.start()
        stack.callback(runner.join)
        stack.callback(supervisor.stop)
        yield LocalWorkers(url, supervisor)


def run_batch(
    file: Path,
    output: Path,
    errors: Path | None,
    *,
    processes: int = 1,
    concurrency: int = 64,
    config_path: Path | None = None,
    timeout_s: float | None = None,
    console: Console | None = None,
) -> RunReport:
    """Run one batch start to finish on this machine."""
    console = console or Console(stderr=True)
    if not file.is_file():
        raise FileNotFoundError(f"input file not found: {file}")
    settings = Settings()
    if config_path is not None:
        settings = settings.model_copy(update={"config": config_path})
    config = load_config(settings.config)
    started = time.monotonic()
    with (
        local_workers(
            settings, processes=processes, concurrency=concurrency, console=console
        ) as local,
        Client(local.url, settings=settings, config=config) as client,
    ):
        report = client.submit_file(file)
        if report.invalid:
            console.print(f"[yellow]{report.invalid} invalid line(s): see the error file[/yellow]")
        batch = _follow(client, report.batch_id, local.supervisor, timeout_s, console)
        collected = collect(client, report.batch_id, output, errors)
    return RunReport(batch, collected, time.monotonic() - started)


def _follow(
    client: Client,
    batch_id: str,
    supervisor: Supervisor,
    timeout_s: float | None,
    console: Console,
) -> Batch:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[red]{task.fields[failed]} failed"),
        TextColumn("{task.fields[rate]:.0f}/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(batch_id, total=None, failed=0, rate=0.0)
        while True:
            batch = client.batch(batch_id)
            c = batch.counts
            bar.update(
                task, total=c.total, completed=c.done, failed=c.failed, rate=pace(batch).rate_per_s
            )
            if batch.finished:
                return batch
            if supervisor.failed:
                raise RunFailed(supervisor.failed)
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailed(f"batch {batch_id} not finished after {timeout_s:.0f}s")
            time.sleep(0.2)
