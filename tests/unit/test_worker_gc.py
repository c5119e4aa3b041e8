"""The worker's collector settings (#22): young collections far apart, start-up state frozen,
and the start-up imports of batchyard's processes made with the GC off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.unit.test_lean_redis import _run
from workers.lifetime import imports_done
from workers.process import GC_THRESHOLD, quiet_gc

#: Runs a process's entry point with `imports_done` watched: at exit it prints whether the GC
#: was on when the imports were done, then whether it is on and the imports frozen.
WATCH = (
    "import atexit, gc, runpy, sys, workers.lifetime as lt\n"
    "seen = []\n"
    "real = lt.imports_done\n"
    "lt.imports_done = lambda: (seen.append(gc.isenabled()), real())\n"
    "atexit.register(lambda: print(seen, gc.isenabled(), gc.get_freeze_count() > 0))\n"
)


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


@pytest.mark.usefixtures("restore_gc")
def test_imports_done_freezes_what_exists_and_turns_the_gc_back_on() -> None:
    gc.disable()
    try:
        imports_done()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.enable()


def test_a_worker_process_imports_with_the_gc_off_and_runs_with_it_on() -> None:
    # A prestarted worker that nobody claims (stdin at EOF) exits right after its imports.
    code = WATCH + (
        "sys.stdin = open('/dev/null')\n"
        "sys.argv = ['workers.process', '--await-handoff', '1']\n"
        "runpy.run_module('workers.process', run_name='__main__', alter_sys=True)\n"
    )
    assert _run(code) == "[False] True True"


def test_importing_the_worker_module_leaves_the_gc_alone() -> None:
    assert _run(WATCH + "import workers.process\n") == "[] True False"


@pytest.mark.parametrize("command", ["run", "status"])
def test_the_cli_imports_its_command_with_the_gc_off(command: str) -> None:
    code = WATCH + (
        f"sys.argv = ['batchyard', {command!r}, '--help']\n"
        "from batchyard.launch import main\n"
        "main()\n"
    )
    assert _run(code).splitlines()[-1] == "[False] True True"
