"""The worker's collector settings (#22): young collections far apart, start-up state frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from workers.process import GC_THRESHOLD, quiet_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_quiet_gc_raises_the_young_threshold_and_freezes_what_exists() -> None:
    _, older, oldest = gc.get_threshold()
    quiet_gc()
    assert gc.get_threshold() == (GC_THRESHOLD, older, oldest)
    assert gc.get_freeze_count() > 0
