"""Worker processes started before they are needed, so their imports overlap the caller's.

A worker process spends most of its first second importing (dramatiq, aiohttp, pydantic, the
adapters), and `batchyard run` used to start it only after its own imports, the input check
and the embedded Redis: two start-ups in a row (#22). `prestart()` starts one at once, with no
settings; it imports everything, then waits on its stdin for the command line and environment a
cold start would have had. `claim()` hands those over (the supervisor calls it instead of
spawning); `discard_all()` closes the stdin of any left unclaimed, and they exit. A parent that
dies closes the pipe too, so a waiting worker never outlives it. `hand_early()` hands them
over before any claim, where the caller knows them already (a new batch of `batchyard run`);
`claim()` then takes that worker only if it asks for the same.

`check(config)` asks a waiting worker to check a config as `workers.supervisor.preflight` does:
it has imported the adapters (and aiohttp) already, which that check cost `batchyard run`'s own
process (~0.1-0.2 s of CPU, #22). Only a pass is taken from it; the caller checks a failing
config itself, so the error it reports is the one it always reported.

Only this module's light imports run in the caller before `prestart()`: orjson (~11 ms of CPU
with the dataclasses it pulls in) is imported by the first check or handoff, after the worker
has started.

`prestart(fork=True)` (what `batchyard run` does on Linux) makes the worker with `os.fork`
instead, once this process has imported `SHARED`, the modules both processes need: redis-py,
pydantic and the schemas were most of a worker's start-up imports, and a spawned worker
imported them a second time (~1.1 of its ~1.3 G instructions, #22). The forked worker goes on
to import only what a worker needs beyond them, and then waits as a spawned one does.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from workers.lifetime import PARENT_PID_ENV, wait_exit

if TYPE_CHECKING:
    from pathlib import Path

#: `python -m workers.process HANDOFF_FLAG <fd>`: import, then read requests from stdin, one
#: JSON line each: `{"check": config path or null}` is answered on the pipe `fd` (`PASSED` or
#: `FAILED` and a newline); `{"argv", "env"}` hands the worker over.
HANDOFF_FLAG = "--await-handoff"
#: The worker's entry point: its `__main__` waits for a handoff, its `run_forked` in a fork.
WORKER = "workers.process"
PASSED, FAILED = b"passed", b"failed"
#: Longest wait for a prestarted worker's check (its imports included) before checking here.
CHECK_WAIT_S = 60.0

#: Environment a handoff may change: read when the worker starts serving, not at import time
#: (PYTHON*, PROMETHEUS_MULTIPROC_DIR or BATCHYARD_TRACE_CONTENT are read at import).
RUNTIME_ENV = frozenset({"REDIS_URL", "BATCHYARD_LOG_LEVEL"})

#: Imported before a fork (`prestart(fork=True)`): modules `batchyard run` and its worker both
#: import (with what they import), redis-py first, without the OTel SDK (`workers.lean_redis`).
SHARED = (
    "workers.lean_redis",
    "schemas.job",
    "schemas.config",
    "schemas.settings",
    "workers.protocol.connection",
    "workers.protocol.scripts",
    "workers.tracing",
    "workers.validators",
    "workers.supervisor",
)


class Forked(subprocess.Popen[bytes]):
    """Popen's view (poll, wait, signals, stdin) of a child made with `os.fork`, so the
    supervisor handles it as any worker it spawned. Popen's own constructor would spawn a
    program: this one sets the attributes its methods use, as that constructor does."""

    def __init__(self, pid: int, stdin: int) -> None:
        self.args = [sys.executable, "-m", WORKER, HANDOFF_FLAG]
        self.pid = pid
        self.returncode = None
        self.stdin = os.fdopen(stdin, "wb")
        self.stdout = self.stderr = None
        self.encoding = self.errors = None
        self.text_mode = False
        self.pipesize = -1
        self._waitpid_lock = threading.Lock()
        self._input = None
        self._communication_started = False
        self._sigint_wait_secs = 0.25
        self._closed_child_pipe_fds = True
        self._child_created = True


class WarmWorker:
    """A started `workers.process` waiting for its handoff."""

    def __init__(self, proc: subprocess.Popen[bytes], env: dict[str, str], replies: int) -> None:
        self.proc = proc
        self.env = env
        #: Read end of the pipe the worker answers checks on.
        self.replies = replies
        #: The configs asked about (`ask`) whose answers are not read yet, in order.
        self.asked: list[Path | None] = []
        #: The arguments and environment of a handoff sent before any `claim` (`hand_early`).
        self.handed: tuple[list[str], dict[str, str]] | None = None
        self._unread = b""

    def ask(self, config: Path | None) -> bool:
        """Have the worker check `config` now; `check` reads its answer (False: not sent)."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            return False
        import orjson

        try:
            self.proc.stdin.write(
                orjson.dumps({"check": None if config is None else str(config)}) + b"\n"
            )
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            return False
        self.asked.append(config)
        return True

    def check(self, config: Path | None) -> bool:
        """Whether the worker found `config` fine (False: it failed, or could not answer),
        asking it now unless `ask` did."""
        if config not in self.asked and not self.ask(config):
            return False
        while self.asked:
            answer = self._answer()
            if answer is None:  # no answer in time, or the worker exited
                self.asked.clear()
                return False
            if self.asked.pop(0) == config:
                return answer == PASSED
        return False

    def _answer(self) -> bytes | None:
        """The worker's next answer line, without its newline."""
        while b"\n" not in self._unread:
            ready, _, _ = select.select([self.replies], [], [], CHECK_WAIT_S)
            chunk = os.read(self.replies, 64) if ready else b""
            if not chunk:
                return None
            self._unread += chunk
        answer, _, self._unread = self._unread.partition(b"\n")
        return answer

    def handoff(self, argv: list[str], env: dict[str, str], *, if_passed: bool = False) -> bool:
        """Send the worker its arguments and environment; False if it cannot take them. A
        worker handed over early (`hand_early`) takes only the same ones: it runs with them.
        `if_passed`: the worker runs only if the config it checked last passed."""
        if self.handed is not None:
            return self.handed == (argv, env) and self.proc.poll() is None
        changed = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        if not changed <= RUNTIME_ENV or self.proc.poll() is not None or self.proc.stdin is None:
            return False
        import orjson

        spec = {"argv": argv, "env": env, **({"if_passed": True} if if_passed else {})}
        try:
            self.proc.stdin.write(orjson.dumps(spec) + b"\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def close(self) -> None:
        """Stop listening for checks (the worker's end closes when it is handed over)."""
        with contextlib.suppress(OSError):
            os.close(self.replies)

    def hand_early(self, argv: list[str], env: dict[str, str], config: Path | None) -> None:
        """Ask the worker to check `config`, then hand it `argv` and `env` now, before anyone
        claims it: it starts (connects, starts its threads, waits for messages) while this
        process still imports and reads its input, and `claim` takes it only if it asks for
        these same arguments and environment (else the worker is ended and one starts cold).
        A worker whose check of `config` fails does not start: it exits."""
        if self.ask(config) and self.handoff(argv, env, if_passed=True):
            self.handed = (argv, env)

    def discard(self) -> None:
        """End the worker unused: EOF on its stdin makes a waiting one exit at once; one
        handed over early (`hand_early`) is running, and stops on SIGTERM, as any worker."""
        self.close()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        if self.handed is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        if not wait_exit(self.proc, 10):
            self.proc.kill()
            self.proc.wait()


_waiting: list[WarmWorker] = []


def prestart(*, fork: bool = False) -> None:
    """Start one worker process now; it waits for `claim` (or `discard_all`). With `fork`,
    where this process can fork safely (Linux, no other thread yet), import `SHARED` here and
    fork the worker from this process, so it does not import them again."""
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    if fork and sys.platform == "linux" and threading.active_count() == 1:
        _waiting.append(_fork(env))
        return
    replies, answer = os.pipe()
    cmd = [sys.executable, "-m", WORKER, HANDOFF_FLAG, str(answer)]
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, pass_fds=(answer,))
    except BaseException:
        os.close(replies)
        raise
    finally:
        os.close(answer)
    _waiting.append(WarmWorker(proc, env, replies))


def _fork(env: dict[str, str]) -> WarmWorker:
    for name in SHARED:
        importlib.import_module(name)
    replies, answer = os.pipe()
    requests, ask = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would write their buffers again
        if stream is not None:
            stream.flush()
    pid = os.fork()
    if pid == 0:  # the worker: it never returns into the caller's code
        try:
            os.close(replies)
            os.close(ask)
            os.environ[PARENT_PID_ENV] = env[PARENT_PID_ENV]
            # By name, as a spawned worker's command line names it (`python -m WORKER`).
            importlib.import_module(WORKER).run_forked(answer, os.fdopen(requests, "rb"))
        except BaseException:
            sys.excepthook(*sys.exc_info())
        finally:
            os._exit(1)
    os.close(answer)
    os.close(requests)
    return WarmWorker(Forked(pid, ask), env, replies)


def ask(config: Path | None) -> None:
    """Have a prestarted worker start checking `config` now, while this process does other
    things; `check(config)` then reads its answer."""
    if _waiting:
        _waiting[-1].ask(config)


def check(config: Path | None) -> bool:
    """True if a prestarted worker checked `config` and found it fine; False if it did not
    (no worker waiting, it failed, or it could not answer): then check it here."""
    return bool(_waiting) and _waiting[-1].check(config)


def hand_early(argv: list[str], env: dict[str, str], config: Path | None) -> None:
    """Hand the prestarted worker its arguments now (`WarmWorker.hand_early`)."""
    if _waiting:
        _waiting[-1].hand_early(argv, env, config)


def claim(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """A prestarted worker now running `workers.process argv` in `env`, else None (start one
    cold). A worker whose start-time environment differs in what it reads at import is ended."""
    while _waiting:
        warm = _waiting.pop()
        if warm.handoff(argv, env):
            warm.close()
            return warm.proc
        warm.discard()
    return None


def discard_all() -> None:
    """End every prestarted worker nobody claimed."""
    while _waiting:
        _waiting.pop().discard()
