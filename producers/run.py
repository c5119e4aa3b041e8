"""`batchyard run`: embedded Redis (if needed), workers, submit, progress, collect, clean up.

An interrupted run loses nothing it paid for. Results reach the output files as they arrive.
The embedded Redis keeps its data (AOF) in `<output>.batchyard/` beside the output, with the
batch id and a fingerprint of the input and config: the same command run again after Ctrl-C,
SIGTERM, a SIGKILL or a reboot resumes that batch, and only requests without a result run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from producers import early_redis
from producers.client import Client
from producers.collect import CollectReport, Export, errors_path, output_errors
from producers.progress import Pace, pace
from producers.submit import new_batch_id
from schemas.batch import Batch
from schemas.config import AppConfig, load_config
from schemas.settings import Settings
from workers import warm
from workers.lifetime import SignalLatch
from workers.protocol.keys import Keys
from workers.redis_server import RedisServer
from workers.supervisor import Supervisor, preflight
from workers.tracing import trace_enabled

#: Shortest time between two steps of the follow loop (read progress, write results) ...
STEP_S = 0.2
#: ... and in its first second, when a small batch may be about to end ...
FIRST_STEP_S = 0.02
#: ... and once every request left may be in flight: any result may be the last.
END_STEP_S = 0.005

#: Shortest time between two saves of the output files' cursor (`_Writer`).
SAVE_S = 1.0

#: A run stops (state kept) once every worker failed this often in a row at start-up.
START_FAILURES = 3

#: `<output><STATE_SUFFIX>/` holds a run's Redis data and `run.json` until the batch completes.
STATE_SUFFIX = early_redis.STATE_SUFFIX


class RunFailed(RuntimeError):
    """The one-command run could not finish (workers would not start, or a timeout)."""


class RunInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run after it wrote what was done; `code` is 128 + signal."""

    def __init__(self, code: int) -> None:
        super().__init__(f"interrupted (exit {code})")
        self.code = code


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
    runner: threading.Thread
    #: The embedded Redis, if the run started one.
    server: RedisServer | None = None

    def stop(self) -> None:
        """Stop taking messages and wait while in-flight calls finish (within the grace)."""
        self.supervisor.stop(wake=True)
        self.runner.join()

    def discard(self) -> None:
        """End the workers now, with no drain (see `Supervisor.discard`), and the embedded
        Redis with no SHUTDOWN: only when its data is about to be thrown away."""
        self.supervisor.discard()
        self.runner.join()
        if self.server is not None:
            self.server.crash()


@contextmanager
def local_workers(
    settings: Settings,
    *,
    processes: int,
    concurrency: int,
    console: Console,
    grace_s: float = 30.0,
    state_dir: Path | None = None,
    before_workers: Callable[[str], None] | None = None,
    started: RedisServer | None = None,
) -> Iterator[LocalWorkers]:
    """REDIS_URL's Redis (else an embedded one) and N supervised workers, all stopped on exit.

    With `state_dir`, the embedded Redis keeps its data there (AOF on) for a later resume.
    `started` is that embedded Redis started already (`producers.early_redis`), waited for
    here. `before_workers(url)` runs once Redis answers and before any worker starts.
    """
    with ExitStack() as stack:
        url = settings.redis_url
        server = None
        if not url:
            server = started
            if server is None:
                redis_dir = None
                if state_dir is not None:
                    redis_dir = state_dir / "redis"
                    redis_dir.mkdir(parents=True, exist_ok=True)
                server = RedisServer(
                    dir=redis_dir,
                    appendonly=redis_dir is not None,
                    die_with_parent=True,
                    unix_socket=True,
                )
            stack.enter_context(server)
            url = server.local_url
        # A config error is one line now, not N crashing children later. The prestarted
        # worker has the adapters imported: its pass spares this process their imports
        # (#22). Its answer is read once the embedded Redis is up, which starts while the
        # worker is still importing or checking (on an error, that Redis just stops again,
        # before anything is printed).
        if not warm.check(settings.config):
            preflight(settings.config)
        if server is not None:
            console.print(f"[dim]embedded redis on {server.url}[/dim]")
        if before_workers is not None:
            before_workers(url)
        env = early_redis.worker_env(url)
        supervisor = Supervisor(
            processes,
            concurrency,
            config=settings.config,
            env=env,
            grace_s=grace_s,
            give_up_after=START_FAILURES,
        )
        runner = threading.Thread(target=supervisor.run, name="supervisor", daemon=True)
        runner.start()
        local = LocalWorkers(url, supervisor, runner, server)
        stack.callback(local.stop)
        yield local


def fingerprint(file: Path, config: AppConfig) -> str:
    """What makes two runs the same batch: the input's bytes and the effective config."""
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(b"\0config\0")
    digest.update(config.model_dump_json().encode())
    return digest.hexdigest()


class RunState:
    """`<output>.batchyard/run.json`: which batch this output belongs to, and of what input."""

    def __init__(self, output: Path) -> None:
        self.dir = output.with_name(output.name + STATE_SUFFIX)
        self.file = self.dir / "run.json"

    def load(self) -> dict[str, Any] | None:
        try:
            data = orjson.loads(self.file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, **data: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, self.file)

    def forget(self) -> None:
        """Remove the record only: what the directory holds is no longer resumed."""
        self.file.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _requeue_orphans(url: str, settings: Settings) -> None:
    """Messages fetched by the workers of an interrupted run sit in their ack sets: mark those
    workers dead so the first maintenance round puts the messages back on their queues now,
    rather than after the heartbeat timeout; and drop the concurrency leases their calls held
    (a cut call's lease would hold its place under adaptive concurrency for the lease's whole
    TTL). Only safe on a Redis no other worker uses."""
    # Here, not at the top: it imports dramatiq, which only a resumed run needs in this
    # process (the workers are other processes), #22.
    from workers.dramatiq_ext.dispatch import heartbeats_key

    client = redis.Redis.from_url(url)
    try:
        keys = Keys(settings.namespace)
        key = heartbeats_key(keys.dramatiq_ns)
        workers: list[Any] = list(client.zrange(key, 0, -1))
        if workers:
            client.zadd(key, dict.fromkeys(workers, 0.0))
        leases = list(client.scan_iter(keys.all_leases(), count=1000))
        if leases:
            client.delete(*leases)
    finally:
        client.close()


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
    grace_s: float = 10.0,
    fresh: bool = False,
    keep_state: bool = False,
) -> RunReport:
    """Run one batch start to finish on this machine, resuming an interrupted run of it."""
    console = console or Console(stderr=True)
    if not file.is_file():
        raise FileNotFoundError(f"input file not found: {file}")
    settings = Settings()
    if config_path is not None:
        settings = settings.model_copy(update={"config": config_path})
    # The prestarted worker checks the config while this process reads it, reads the state
    # and starts Redis (`local_workers` takes the answer), not after them (#22).
    warm.ask(settings.config)
    config = load_config(settings.config)
    started = time.monotonic()
    state = RunState(output)
    cursor_file = output.with_name(output.name + ".cursor")
    print_fp = fingerprint(file, config)
    saved = state.load()
    # The Redis `batchyard.launch` started for a new batch here, before its imports: taken if
    # this is one, on an embedded Redis (else stopped now, with the directory made for it).
    spare = early_redis.claim(
        state.dir, wanted=not fresh and saved is None and not settings.redis_url
    )
    if fresh:
        state.remove()
        cursor_file.unlink(missing_ok=True)
        saved = None
    elif saved is not None and saved.get("fingerprint") != print_fp:
        raise RunFailed(
            f"{state.dir} holds an unfinished run of another input or config; run with "
            "--fresh to discard it and start over, or choose another --output"
        )
    elif saved is not None and not saved.get("submitted"):
        console.print("[yellow]the last run stopped while submitting; starting over[/yellow]")
        state.remove()
        saved = None
    elif saved is None and state.dir.exists() and spare is None:
        state.remove()  # a state directory without its record holds nothing we can resume
    embedded = not settings.redis_url
    state.dir.mkdir(parents=True, exist_ok=True)
    latch = SignalLatch()
    if threading.current_thread() is threading.main_thread():
        latch.install()
    try:
        with (
            local_workers(
                settings,
                processes=processes,
                concurrency=concurrency,
                console=console,
                grace_s=grace_s,
                state_dir=state.dir,
                before_workers=(
                    (lambda url: _requeue_orphans(url, settings))
                    if saved is not None and embedded
                    else None
                ),
                started=spare,
            ) as local,
            Client(local.url, settings=settings, config=config) as client,
        ):
            if latch.installed:
                local.supervisor.stop_on(latch)
            batch_id = _start_batch(client, file, state, saved, print_fp, output, console)
            with _Writer(client, batch_id, output, errors) as writer:
                try:
                    batch = _follow(
                        client, batch_id, local.supervisor, timeout_s, console, latch, writer
                    )
                except RunInterrupted:
                    console.print(
                        f"[yellow]stopping: letting calls in flight finish (up to "
                        f"{grace_s:.0f}s); press Ctrl-C again to stop now[/yellow]"
                    )
                    local.stop()
                    writer.step(final=True)
                    done = client.batch(batch_id).counts
                    console.print(
                        f"[yellow]interrupted:[/yellow] {done.done} of {done.total} results "
                        f"written to {output}; run the same command again to resume "
                        f"(state in {state.dir}; --fresh starts over)"
                    )
                    raise
                writer.step(final=True)
            if embedded and not keep_state and not _may_trace():
                # The batch is complete, and its Redis is removed below with its state: a
                # drain (~40 ms at the end of every run, #22) would only write acks and
                # health counters to it, and a SHUTDOWN its AOF's last second (~10 ms). The
                # record goes first: a run stopped before the state is removed must not
                # resume from an AOF short of that second (its results would be written twice).
                state.forget()
                local.discard()
        if not keep_state:
            state.remove()
            # The cursor resumes the output files of this batch only: with its state gone,
            # the same command starts a new batch and rewrites them from the start.
            cursor_file.unlink(missing_ok=True)
    except BaseException:
        # Stopped before its batch was recorded (a config error, Redis failing to start, a
        # Ctrl-C in the start): nothing to resume, so no state directory is left behind.
        if saved is None and state.load() is None:
            state.remove()
        raise
    finally:
        latch.restore()
    return RunReport(batch, writer.report, time.monotonic() - started)


def _may_trace() -> bool:
    """Whether the workers may have spans to export when they stop (then they drain): this
    process traces, or the environment they share with it has an OTEL_* variable."""
    return trace_enabled() or any(name.startswith("OTEL_") for name in os.environ)


def _start_batch(
    client: Client,
    file: Path,
    state: RunState,
    saved: dict[str, Any] | None,
    print_fp: str,
    output: Path,
    console: Console,
) -> str:
    """Resume the saved batch if Redis still has it, else submit the input as a new one."""
    if saved is not None:
        batch_id = str(saved["batch_id"])
        if client.redis.exists(client.keys.batch(batch_id)):
            c = client.batch(batch_id).counts
            console.print(
                f"resuming {batch_id}: {c.done} of {c.total} requests already have a result; "
                f"running the other {c.total - c.done} (--fresh starts over)"
            )
            return batch_id
        console.print(f"[yellow]batch {batch_id} is gone from Redis; starting over[/yellow]")
    batch_id = new_batch_id()
    state.save(batch_id=batch_id, fingerprint=print_fp, submitted=False, output=str(output))
    report = client.submit_file(file, batch_id=batch_id)
    state.save(batch_id=batch_id, fingerprint=print_fp, submitted=True, output=str(output))
    if report.invalid:
        console.print(f"[yellow]{report.invalid} invalid line(s): see the error file[/yellow]")
    return batch_id


class _Writer:
    """Appends results to the output files as they arrive (resumable, see `collect`). The
    files stay open for the whole run, and their cursor is saved at most every SAVE_S and when
    the run stops: each save fsyncs both files and replaces the cursor file (~1 ms of CPU),
    and every follow step made one (#22). Lines written after the last save are rewritten
    by a resumed run, as after any crash."""

    def __init__(self, client: Client, batch_id: str, output: Path, errors: Path | None) -> None:
        self.client = client
        self.batch_id = batch_id
        self.output = output
        with output_errors(output):
            self.export = Export(output, errors or errors_path(output), batch_id, "openai")
        self.saved_at = time.monotonic()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        with output_errors(self.output):
            self.export.close()

    @property
    def report(self) -> CollectReport:
        """What this run wrote."""
        return self.export.report

    def wait(self, seconds: float) -> None:
        """Block until a result arrives past what was written, at most `seconds`."""
        stream: dict[Any, Any] = {self.client.keys.stream(self.batch_id): self.export.after}
        self.client.redis.xread(stream, count=1, block=max(1, int(seconds * 1000)))

    def step(self, *, final: bool = False) -> None:
        """Write every result that arrived; save when SAVE_S passed since the last save, and
        always when `final`."""
        export = self.export
        with output_errors(self.output):
            while (page := self.client.raw_results(self.batch_id, export.after)).read:
                export.write(page.entries, page.cursor)
            now = time.monotonic()
            if final or now - self.saved_at >= SAVE_S:
                export.save()
                self.saved_at = now


def _follow(
    client: Client,
    batch_id: str,
    supervisor: Supervisor,
    timeout_s: float | None,
    console: Console,
    latch: SignalLatch,
    writer: _Writer,
) -> Batch:
    followed_at = time.monotonic()
    deadline = None if timeout_s is None else followed_at + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[red]{task.fields[failed]} failed"),
        TextColumn("{task.fields[rate]:.0f}/s"),
        TimeRemainingColumn(),
    )
    # The bar is drawn once per step, when its numbers change, not by rich's refresh thread
    # (10 redraws a second); where stderr is no terminal only the final state is ever shown
    # (at exit), so no step draws at all (#22).
    draw = console.is_terminal
    with Progress(*columns, console=console, transient=False, auto_refresh=False) as bar:
        task = bar.add_task(batch_id, total=None, failed=0, rate=0.0)
        in_flight = supervisor.processes * supervisor.concurrency
        while True:
            if latch.received:
                raise RunInterrupted(latch.exit_code)
            # Write what arrived, then read the record: a record read first could say "not
            # finished" just before the last results came in, and the step after writing them
            # waited out a whole block (up to 0.2 s at the end of every run) to learn that the
            # batch had finished. What arrives after this read is written by the caller.
            writer.step()
            batch = client.batch(batch_id)
            c = batch.counts
            progress = pace(batch)
            bar.update(
                task,
                total=c.total,
                completed=c.done,
                failed=c.failed,
                rate=progress.rate_per_s,
                refresh=draw,
            )
            if batch.finished:
                return batch
            if supervisor.failed:
                raise RunFailed(supervisor.failed)
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailed(f"batch {batch_id} not finished after {timeout_s:.0f}s")
            # Step at the next result, not a fixed poll later (a small batch's end is seen at
            # once), but at most every STEP_S once the run is under way: each step reads the
            # record and fsyncs the output. A signal is seen within the block time. When the
            # rest should be done within two steps, step often again: the end of a batch was
            # seen up to a whole STEP_S late, ~0.1 s of every run's wall on average (#22).
            stepped = time.monotonic()
            writer.wait(0.2)
            gap = step_gap(progress, stepped - followed_at, c.total - c.done <= in_flight)
            time.sleep(max(0.0, stepped + gap - time.monotonic()))


def step_gap(progress: Pace, following_s: float, all_in_flight: bool = False) -> float:
    """Time between two steps of the follow loop: FIRST_STEP_S in its first second and when
    the rest of the batch should be done within two steps, else STEP_S; END_STEP_S once
    every request left fits in the calls in flight (`all_in_flight`), which a small batch's
    do from the start: FIRST_STEP_S saw its end up to 20 ms late (#22)."""
    if all_in_flight:
        return END_STEP_S
    ending = progress.eta_s is not None and progress.eta_s < 2 * STEP_S
    return FIRST_STEP_S if ending or following_s < 1.0 else STEP_S
