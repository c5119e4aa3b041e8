"""`batchyard worker`: N supervised worker processes; a child that dies is restarted."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers import warm
from workers.crashes import (
    FAIL_AT,
    SOLO_AT,
    Marks,
    after_death,
    marks_dir,
    marks_path,
    read_marks,
    sweep_marks,
)
from workers.lifetime import PARENT_PID_ENV, SignalLatch, wait_exit

if TYPE_CHECKING:
    from schemas.settings import Settings

log = logging.getLogger("batchyard.supervisor")


def preflight(config: Path | None) -> None:
    """Check a worker config with its adapters, so a user error is one line at start-up
    instead of N children exiting over and over."""
    from providers.registry import check_config
    from schemas.config import load_config
    from workers.plugins import check_plugins

    app_config = load_config(config)
    check_config(app_config)
    check_plugins(app_config.plugins)


def _after_death(url: str, marks: Marks, pid: int) -> None:
    """`after_death` for the child `pid`, its outcome logged."""
    try:
        counted = after_death(url, marks)
    except Exception as exc:  # Redis away: redelivered uncounted, after the timeout
        log.warning("could not count the requests worker process %d was running: %s", pid, exc)
        return
    if marks.running:
        log.warning(
            "worker process %d died with %d request(s) running; a request whose worker "
            "dies %d times runs alone, and fails after %d",
            pid,
            counted,
            SOLO_AT,
            FAIL_AT,
        )


def worker_args(concurrency: int, grace_s: float, config: Path | None) -> list[str]:
    """The command line of a worker process (`python -m workers.process ...`)."""
    args = ["--concurrency", str(concurrency), "--grace", str(grace_s)]
    return args if config is None else [*args, "--config", str(config)]


#: A child that exits sooner failed at start-up; one that lived this long had started.
STARTED_S = 5.0


class Supervisor:
    """Starts worker processes, restarts any that exit, stops them all on request."""

    def __init__(
        self,
        processes: int,
        concurrency: int,
        *,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        grace_s: float = 30.0,
        metrics_port: int | None = None,
        give_up_after: int | None = None,
    ) -> None:
        """`give_up_after`: stop (setting `failed`) once every child has failed at start-up
        that many times in a row; None restarts them for good, as a service should."""
        if processes < 1 or concurrency < 1:
            raise ValueError("processes and concurrency must be >= 1")
        self.processes = processes
        self.concurrency = concurrency
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.grace_s = grace_s
        self.metrics_port = metrics_port
        self._metrics_dir: tempfile.TemporaryDirectory[str] | None = None
        self._metrics_server: Any = None
        self.children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self._started_at = [0.0] * processes
        self._failures = [0] * processes
        self.give_up_after = give_up_after
        # A plain flag, not an Event: `stop()` is called from signal handlers, which must not
        # take locks (a second signal inside `Event.set` would deadlock on its condition).
        self._stopping = False
        #: Set by `stop(now=True)`: kill the children instead of waiting for their drain.
        self._now = False
        #: Set by `discard()`: kill the children at once, with no SIGTERM and no warning.
        self._discard = False
        #: Wakes `run()` at once for a `stop()` from ordinary code (`wake=True`).
        self._wake = threading.Event()
        #: Set when a child fails at start-up with a user error: restarting would not help.
        self.failed: str | None = None

    def preflight(self) -> None:
        """Check the config the children will load (see `preflight`)."""
        path = self.config
        if path is None and self.env.get("BATCHYARD_CONFIG"):
            path = Path(self.env["BATCHYARD_CONFIG"])
        preflight(path)

    def _spawn(self, slot: int) -> None:
        argv = worker_args(self.concurrency, self.grace_s, self.config)
        cmd = [sys.executable, "-m", "workers.process", *argv]
        # The child arms its parent-death signal and watches this pid (workers.lifetime).
        env = {**self.env, PARENT_PID_ENV: str(os.getpid())}
        # A worker prestarted by `batchyard run` has done its imports already.
        self.children[slot] = warm.claim(argv, env) or subprocess.Popen(cmd, env=env)
        self._started_at[slot] = time.monotonic()

    def start(self) -> None:
        """Start every child (and the /metrics server when a port is set)."""
        sweep_marks()  # what killed supervisors left
        if self.metrics_port is not None:
            self._start_metrics()
        for slot in range(self.processes):
            self._spawn(slot)

    def _start_metrics(self) -> None:
        """Children write metrics to a shared directory; this process serves them."""
        from schemas.config import load_config
        from schemas.settings import Settings

        self._metrics_dir = tempfile.TemporaryDirectory(prefix="batchyard-metrics-")
        self.env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir.name
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir.name
        from workers.metrics import serve_metrics

        settings = Settings()
        redis_url = self._redis_url(settings)
        if not redis_url:
            raise ValueError("REDIS_URL is not set")
        path = self.config or (Path(p) if (p := self.env.get("BATCHYARD_CONFIG")) else None)
        endpoints = list(load_config(path).endpoints)
        self._metrics_server = serve_metrics(
            self.metrics_port or 0, redis_url, settings.namespace, endpoints
        )
        log.info("metrics on http://127.0.0.1:%d/metrics", self.metrics_port)

    def check(self) -> None:
        """Restart children that exited, backing off when one keeps crashing at start-up."""
        for slot, child in enumerate(self.children):
            if self._stopping:  # a child that exited on a group-wide signal is not restarted
                return
            if child is None:
                continue
            lived = time.monotonic() - self._started_at[slot]
            if child.poll() is None:
                if lived >= STARTED_S:  # it started: its slot's run of failures is over
                    self._failures[slot] = 0
                continue
            if self._metrics_dir is not None:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
            # One that died running requests had started, however soon it died.
            started = self._count_deaths(child.pid) or lived >= STARTED_S
            self._failures[slot] = 0 if started else self._failures[slot] + 1
            if child.returncode == 2 and lived < STARTED_S:
                self.failed = "a worker process rejected the configuration (see its error above)"
                self._stopping = True
                return
            if self.give_up_after is not None and min(self._failures) >= self.give_up_after:
                self.failed = (
                    f"worker processes keep failing at start-up (exit {child.returncode}, "
                    f"{self._failures[slot]} times in a row; see their errors above)"
                )
                self._stopping = True
                return
            delay = min(30.0, 0.5 * 2 ** max(0, self._failures[slot] - 1))
            log.warning(
                "worker process %d exited with %s; restarting in %.1fs",
                child.pid,
                child.returncode,
                delay if self._failures[slot] else 0,
            )
            if self._failures[slot] and self._sleep(delay):
                return
            self._spawn(slot)

    def _count_deaths(self, pid: int) -> bool:
        """A child died unasked: add one to the deaths of each job it was running and put
        what it held back on the queues at the next maintenance (`workers.crashes`). Whether
        it was running any job."""
        from schemas.settings import Settings

        path = marks_path(os.getpid(), pid)
        try:
            marks = read_marks(path)
            path.unlink()
        except OSError:  # it marked nothing (it had not started, or was not a LoopWorker)
            return False
        url, ran = self._redis_url(Settings()), bool(marks.running)
        if url and (ran or marks.ids):
            # In a thread of its own: a Redis that hangs (one that is down fails at once) held
            # this loop for the client's socket timeout, 5.1 s per death measured, and with it
            # the other children's restarts and the stop a Ctrl-C asks for. The messages come
            # back only after the count (`expire_owners` follows it), or the heartbeat timeout.
            threading.Thread(
                target=_after_death,
                args=(url, marks, pid),
                name="batchyard-death-count",
                daemon=True,
            ).start()
        return ran

    def _redis_url(self, settings: Settings) -> str | None:
        """The Redis the children use: this supervisor's REDIS_URL for them, else its own."""
        return self.env.get("REDIS_URL") or settings.redis_url

    def run(self, poll_s: float = 0.2) -> None:
        """Supervise until `stop()` is called or SIGTERM/SIGINT arrives."""
        self.start()
        while not self._sleep(poll_s):
            self.check()
        self.shutdown()

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early once stopping; True when stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._wake.wait(min(left, 0.05))
        return True

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stopping

    def stop(self, *, wake: bool = False, now: bool = False) -> None:
        """Ask `run()` to stop and drain the children. Safe in a signal handler: it only
        stores a flag, however many signals arrive and however they nest. Ordinary code
        passes `wake=True` so `run()` starts the drain now, not at its next poll; `now=True`
        (a second Ctrl-C) cuts the drain short: the children are killed, their unacknowledged
        jobs are redelivered and the results they stored stay."""
        self._stopping = True
        self._now = self._now or now
        if wake or now:
            self._wake.set()

    def discard(self) -> None:
        """Stop `run()` and end the children at once (SIGKILL), with no drain: only for
        workers whose Redis, and all they would still write to it while draining (acks,
        health counters), is about to be thrown away, as a finished `batchyard run`'s
        embedded Redis is."""
        self._discard = True
        self.stop(wake=True)

    def stop_on(self, latch: SignalLatch) -> None:
        """Drain on the latch's first signal, and stop now on an urgent one (a second Ctrl-C)."""

        def watch() -> None:
            latch.event.wait()
            self.stop(wake=True)
            latch.urgent.wait()
            self.stop(now=True)

        threading.Thread(target=watch, name="batchyard-supervisor-signals", daemon=True).start()

    def shutdown(self) -> None:
        """SIGTERM every child, wait for the grace period (or `stop(now=True)`), SIGKILL what
        is left."""
        pending = [c for c in self.children if c is not None and c.poll() is None]
        if not self._discard:  # discarded: killed below, with no drain and no warning
            for child in pending:
                child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s + 5
            while pending and not self._now:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if wait_exit(pending[0], min(left, 0.1)):
                    pending.pop(0)
        for child in pending:
            if self._discard:
                pass
            elif self._now:
                log.warning("interrupted again; killing worker process %d", child.pid)
            else:
                log.warning("worker process %d did not stop in time; killing it", child.pid)
            child.kill()
        for child in pending:
            child.wait()
        shutil.rmtree(marks_dir(os.getpid()), ignore_errors=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._metrics_dir is not None:
            self._metrics_dir.cleanup()
