"""SignalLatch: a signal sets its event at once, and its watcher never polls."""

from __future__ import annotations

import os
import signal
import time

from tests.conftest import wakeups
from workers.lifetime import SignalLatch


def test_a_signal_latch_waits_without_polling_and_its_watcher_ends_on_restore() -> None:
    latch = SignalLatch().install()
    watcher = latch._watcher
    assert watcher is not None
    try:
        # Given an installed latch and no signal, its watcher sleeps: no wake-ups (it
        # polled every 20 ms, taking the GIL from a busy worker each time),
        before = wakeups(watcher)
        time.sleep(0.5)
        assert wakeups(watcher) - before <= 2
        # a real signal still sets the event at once,
        os.kill(os.getpid(), signal.SIGTERM)
        assert latch.event.wait(10)
        assert latch.signum == signal.SIGTERM and not latch.urgent.is_set()
    finally:
        latch.restore()
    # and restoring the handlers ends the watcher (it used to poll for good).
    watcher.join(10)
    assert not watcher.is_alive()


def test_a_restored_latch_that_never_saw_a_signal_ends_its_watcher_and_sets_nothing() -> None:
    latch = SignalLatch().install()
    watcher = latch._watcher
    assert watcher is not None
    latch.restore()
    watcher.join(10)
    assert not watcher.is_alive()
    assert not latch.event.is_set() and not latch.urgent.is_set() and latch.signum is None
