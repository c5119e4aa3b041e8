"""Process lifetime: signals that only record themselves, and children that die with their parent.

A signal handler runs between two bytecodes of the main thread, possibly while that thread
holds a lock the handler would need (`threading.Event.set` inside `Event.set`, when a second
SIGTERM lands while the first is being handled, blocks forever). So the handlers here only
store the signal number; a watcher thread turns it into an `Event` that ordinary code waits on.

A child process learns of its parent's death two ways: Linux's parent-death signal (`prctl
PR_SET_PDEATHSIG`, delivered at once, even after a SIGKILL of the parent) and, where that is
missing, a watchdog thread that notices `os.getppid()` change.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import ctypes


#: `prctl` option that asks the kernel for a signal when the parent thread exits.
PR_SET_PDEATHSIG = 1

#: Environment variable that tells a child the pid of the process it must not outlive.
PARENT_PID_ENV = "BATCHYARD_PARENT_PID"

_libc: ctypes.CDLL | None = None


def _warn(message: str, *args: object) -> None:
    # logging and ctypes (~9 ms of CPU) are imported where used: `batchyard run` imports this
    # module before it starts its first worker (`workers.warm`).
    import logging

    logging.getLogger("batchyard.lifetime").warning(message, *args)


def _prctl() -> Callable[..., int] | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        import ctypes

        try:
            # The running program's own symbols include libc's: no `find_library`, which runs
            # `ldconfig -p` in a subprocess (in every worker process and every `run`).
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.prctl  # noqa: B018 (a Python linked without libc's symbols raises here)
        except (OSError, AttributeError):
            from ctypes.util import find_library

            try:
                _libc = ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)
            except OSError:
                return None
    fn: Callable[..., int] = _libc.prctl
    return fn


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits; False where unsupported."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent_preexec() -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child (even a non-Python one, such as
    redis-server) gets SIGTERM when the thread that started it exits. The C function is
    looked up here, before the fork, so the child runs no import."""
    prctl = _prctl()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return preexec


class SignalLatch:
    """Records SIGTERM/SIGINT without taking any lock; `event` is set soon after the first.

    `signum` is the first signal received (what the exit code reports), `count` how many
    arrived in all. `urgent` is set when a SIGINT comes at least `REPEAT_S` after the first
    signal: a person pressing Ctrl-C again, who wants the process to stop now rather than
    drain. Repeated SIGTERMs, and signals in one burst (a terminal's SIGINT to the group
    followed by a process manager's SIGTERM, as honcho and foreman send), never make it urgent.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    #: A SIGINT this long after the first signal is a second Ctrl-C, not part of one burst.
    REPEAT_S = 0.5

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.event = threading.Event()
        self.urgent = threading.Event()
        self._first_at = 0.0
        self._again = False
        self._previous: dict[int, object] = {}
        self._watcher: threading.Thread | None = None
        #: The handler wakes the watcher through this pipe (made by `install`): the watcher
        #: polled the attributes every 20 ms before, and each of those wake-ups took the GIL
        #: from a busy worker's event loop (#22). Its write end stays open for good: a
        #: handler or `trigger` may write at any time, and a closed descriptor's number may
        #: by then be another file's.
        self._wake_w = -1
        self._restored = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # Attribute stores and one write to a non-blocking pipe: no lock, safe however
        # signals nest (a full pipe already holds a wake-up).
        now = time.monotonic()
        if self.signum is None:
            self.signum = signum
            self._first_at = now
        elif signum == signal.SIGINT and now - self._first_at >= self.REPEAT_S:
            self._again = True
        self.count += 1
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe holds a wake-up already
            os.write(self._wake_w, b"\0")

    def install(self) -> SignalLatch:
        """Install the handlers (main thread only) and start the watcher thread."""
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._watcher = threading.Thread(
            target=self._watch, args=(wake_r,), name="batchyard-signals", daemon=True
        )
        self._watcher.start()
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before `install`, and end the watcher."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        self._restored = True
        self._wake()

    def trigger(self, signum: int = signal.SIGTERM) -> None:
        """Act as if `signum` had arrived (from a thread: watchdogs, tests)."""
        self._handle(signum, None)

    def _watch(self, wake_r: int) -> None:
        try:
            while self.signum is None and not self._restored:
                os.read(wake_r, 64)
            if self.signum is not None:
                self.event.set()
            while not self._again and not self._restored:
                os.read(wake_r, 64)
            if self._again:
                self.urgent.set()
        finally:
            os.close(wake_r)  # later writes fail (EPIPE), and are ignored

    @property
    def installed(self) -> bool:
        """True once `install` ran (only then do signals reach the latch)."""
        return self._watcher is not None

    @property
    def received(self) -> bool:
        """True once any signal was recorded."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the first signal, as a shell reports a process that died of it."""
        return 128 + (self.signum or 0)


def watch_parent(parent_pid: int, on_orphaned: Callable[[], None], poll_s: float = 0.5) -> None:
    """Call `on_orphaned` once when this process's parent is no longer `parent_pid`."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        _warn("supervisor %d is gone; stopping", parent_pid)
        on_orphaned()

    threading.Thread(target=watch, name="batchyard-parent-watch", daemon=True).start()


def exit_after(seconds: float, code: int = 1, *, now: threading.Event | None = None) -> None:
    """Hard stop: end the process `seconds` from now whatever it is doing (a drain stuck on
    a Redis that is gone must not keep a stopped worker alive), or as soon as `now` is set
    (a second Ctrl-C: what is not acknowledged yet is redelivered, results stored stay)."""

    def expire() -> None:
        if (now or threading.Event()).wait(seconds):
            _warn("interrupted again; exiting now without finishing the calls in flight")
        else:
            _warn("still stopping after %.0fs; exiting now", seconds)
        os._exit(code)

    threading.Thread(target=expire, name="batchyard-exit-deadline", daemon=True).start()


def imports_done() -> None:
    """End of a process's start-up imports, made with the cyclic GC off (`gc.disable`): they
    build ~100,000 objects and next to no garbage, and would set off a dozen collections
    walking them all (30-60 ms of a worker's ~0.6 s start, #22). Freeze what they built, so
    later full collections skip it too, and turn the GC back on."""
    gc.freeze()
    gc.enable()


def exit_now(code: int) -> NoReturn:
    """Exit with `code` as `sys.exit` would, minus the interpreter's teardown.

    atexit handlers run (logging flushes, the OTel exporter, temporary directories) and the
    standard streams are flushed; then `os._exit` skips freeing every module and object, which
    took 0.1-0.4 s at the end of each `batchyard run` and each worker process (#22). With a
    non-daemon thread still alive this is a plain `sys.exit`, which waits for it."""
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `proc` to exit and reap it; False if it is still running.

    Woken by the exit itself (a pidfd, Linux 5.3+): `Popen.wait(timeout)` polls with sleeps
    growing to 50 ms, which a short-lived stop paid at each process it waited for."""
    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel: poll as Popen does
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        select.select([fd], [], [], max(0.0, timeout_s))
    finally:
        os.close(fd)
    return proc.poll() is not None
