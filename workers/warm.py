"""Worker processes started before they are needed, so their imports overlap the caller's.

A worker process spends most of its first second importing (dramatiq, aiohttp, pydantic, the
adapters), and `batchyard run` used to start it only after its own imports, the input check
and the embedded Redis: two start-ups in a row (#22). `prestart()` starts one at once, with no
settings; it imports everything, then waits on its stdin for the command line and environment a
cold start would have had. `claim()` hands those over (the supervisor calls it instead of
spawning); `discard_all()` closes the stdin of any left unclaimed, and they exit. A parent that
dies closes the pipe too, so a waiting worker never outlives it.

Only this module's light imports run in the caller before `prestart()`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

import orjson

from workers.lifetime import PARENT_PID_ENV, wait_exit

#: `python -m workers.process HANDOFF_FLAG`: import, then read `{"argv", "env"}` from stdin.
HANDOFF_FLAG = "--await-handoff"

#: Environment a handoff may change: read when the worker starts serving, not at import time
#: (PYTHON*, PROMETHEUS_MULTIPROC_DIR or BATCHYARD_TRACE_CONTENT are read at import).
RUNTIME_ENV = frozenset({"REDIS_URL", "BATCHYARD_LOG_LEVEL"})


@dataclass
class WarmWorker:
    """A started `workers.process` waiting for its handoff."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def handoff(self, argv: list[str], env: dict[str, str]) -> bool:
        """Send the worker its arguments and environment; False if it cannot take them."""
        changed = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        if not changed <= RUNTIME_ENV or self.proc.poll() is not None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.write(orjson.dumps({"argv": argv, "env": env}) + b"\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def discard(self) -> None:
        """End the worker unused: EOF on its stdin makes it exit at once."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        if not wait_exit(self.proc, 10):
            self.proc.kill()
            self.proc.wait()


_waiting: list[WarmWorker] = []


def prestart() -> None:
    """Start one worker process now; it waits for `claim` (or `discard_all`)."""
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    cmd = [sys.executable, "-m", "workers.process", HANDOFF_FLAG]
    _waiting.append(WarmWorker(subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE), env))


def claim(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """A prestarted worker now running `workers.process argv` in `env`, else None (start one
    cold). A worker whose start-time environment differs in what it reads at import is ended."""
    while _waiting:
        warm = _waiting.pop()
        if warm.handoff(argv, env):
            return warm.proc
        warm.discard()
    return None


def discard_all() -> None:
    """End every prestarted worker nobody claimed."""
    while _waiting:
        _waiting.pop().discard()
