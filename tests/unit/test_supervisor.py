"""Supervisor.check: restarts, and when a one-shot run gives up on children that cannot start."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

from workers.crashes import RunningMarks, marks_dir, marks_path
from workers.supervisor import STARTED_S, Supervisor


class Child:
    """A child process as `check` sees it: exited with `returncode`, or running (None)."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode
        self.pid = 4242

    def poll(self) -> int | None:
        return self.returncode


def supervisor(
    monkeypatch: pytest.MonkeyPatch, processes: int, give_up_after: int | None
) -> tuple[Supervisor, list[int]]:
    """A supervisor whose every (re)start is a child that has already failed (exit 1), with
    no backoff waits; and the slots it started, in order."""
    sup = Supervisor(processes, 1, give_up_after=give_up_after)
    started: list[int] = []

    def spawn(slot: int) -> None:
        started.append(slot)
        sup.children[slot] = Child(1)  # type: ignore[assignment]
        sup._started_at[slot] = time.monotonic()

    monkeypatch.setattr(sup, "_spawn", spawn)
    monkeypatch.setattr(sup, "_sleep", lambda seconds: False)
    return sup, started


def test_a_run_gives_up_once_every_child_failed_at_start_up_that_many_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sup, started = supervisor(monkeypatch, 2, give_up_after=3)
    sup.start()
    while sup.failed is None and len(started) < 50:
        sup.check()
    # The run gave up once both slots had failed 3 times in a row (slot 0 had one more
    # start while slot 1 had not yet), and says why.
    assert started == [0, 1, 0, 1, 0, 1, 0]
    assert sup.stopping
    assert sup.failed == (
        "worker processes keep failing at start-up (exit 1, 3 times in a row; "
        "see their errors above)"
    )


def test_a_child_that_started_keeps_the_run_going_while_another_keeps_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sup, started = supervisor(monkeypatch, 2, give_up_after=3)
    sup.start()
    # Slot 0 failed 3 times at start-up, then its child started and is running,
    sup._failures[0] = 3
    sup.children[0] = Child(None)  # type: ignore[assignment]
    sup._started_at[0] = time.monotonic() - STARTED_S - 1
    for _ in range(10):  # while slot 1's children fail at every start:
        sup.check()
    # the run does not give up (a worker is running); slot 1 is restarted each time.
    assert sup.failed is None and not sup.stopping
    assert started == [0, 1] + [1] * 10


def test_a_service_restarts_failing_children_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    sup, started = supervisor(monkeypatch, 1, give_up_after=None)
    sup.start()
    for _ in range(20):
        sup.check()
    assert sup.failed is None and not sup.stopping
    assert started == [0] * 21


def test_a_death_count_on_a_redis_that_hangs_does_not_hold_the_supervisor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a "Redis" that takes connections and never answers (a listening socket),
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
    sup, started = supervisor(monkeypatch, 1, give_up_after=None)
    sup.env["REDIS_URL"] = url
    sup.start()
    # and a child that died unasked while running a request (its marks say so),
    marks = RunningMarks(marks_path(os.getpid(), Child(1).pid), slots=4)
    marks.mark(b"ns:q.msgs\tid-a")
    try:
        # when the supervisor checks its children,
        checking = threading.Thread(target=sup.check, daemon=True)
        checking.start()
        # it restarts the child while the count of its death waits on Redis (a socket
        # timeout of 5 s, and redis-py's retries), not after it.
        checking.join(timeout=4)
        assert not checking.is_alive(), "the supervisor waited on the hung Redis"
        assert started == [0, 0]
    finally:
        hung.close()
        marks.close()
        shutil.rmtree(marks_dir(os.getpid()), ignore_errors=True)
