"""Prestarted worker processes (`workers.warm`): they run as a cold start would once claimed,
and end when nobody claims them or their parent dies (#22)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from producers.client import Client
from tests.conftest import ROOT, openai_line, wait_until
from workers import warm
from workers.lifetime import PARENT_PID_ENV

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def checkout_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Prestarted workers import this checkout; none is left over after a test."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    yield
    warm.discard_all()


def cold_env(**extra: str) -> dict[str, str]:
    """The environment the supervisor gives a worker it starts (see `Supervisor._spawn`)."""
    return {**os.environ, PARENT_PID_ENV: str(os.getpid()), **extra}


def test_an_unclaimed_worker_exits_quietly() -> None:
    warm.prestart()
    proc = warm._waiting[0].proc
    warm.discard_all()
    assert proc.returncode == 0
    assert not warm._waiting


def test_an_unclaimed_forked_worker_exits_quietly() -> None:
    code = (
        "from workers import warm; warm.prestart(fork=True); proc = warm._waiting[0].proc; "
        "warm.discard_all(); print(type(proc).__name__, proc.returncode)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Forked", "0"]
    assert done.stderr == ""


def test_a_claim_that_changes_import_time_settings_starts_cold(tmp_path: Path) -> None:
    # Given a worker prestarted without content capture (read when tracing is imported),
    warm.prestart()
    proc = warm._waiting[0].proc
    # when the claim asks for it, the prestarted worker is not used, and it ends.
    got = warm.claim(["--concurrency", "1"], cold_env(BATCHYARD_TRACE_CONTENT="1"))
    assert got is None
    assert proc.returncode == 0


def test_a_claimed_worker_runs_jobs_and_stops_on_sigterm(
    redis_url: str, write_config: Callable[[dict[str, object]], Path]
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    warm.prestart()
    claim_and_run(config, redis_url, 5)


def claim_and_run(config: Path, redis_url: str, jobs: int) -> None:
    """Claim the waiting worker, see it run `jobs` jobs, and stop it with SIGTERM."""
    proc = warm.claim(
        ["--concurrency", "4", "--config", str(config)], cold_env(REDIS_URL=redis_url)
    )
    assert proc is not None
    try:
        with Client(redis_url) as client:
            lines = [openai_line(f"w-{i}", "x") for i in range(jobs)]
            batch_id = client.submit_many(lines).batch_id
            wait_until(lambda: client.batch(batch_id).finished, 60, "the batch to finish")
            assert client.batch(batch_id).counts.completed == jobs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


#: A `batchyard run` process's start, in short: fork the worker, have it check the config,
#: hand it over, submit. Prints what it saw; the test reads it.
FORKED = """
import os, signal
from pathlib import Path
import psutil
from workers import warm
from workers.lifetime import PARENT_PID_ENV
warm.prestart(fork=True)
proc = warm._waiting[0].proc
# A fork runs this same program, where a spawned worker runs `python -m workers.process`.
same = psutil.Process(proc.pid).cmdline() == psutil.Process().cmdline()
print("forked" if isinstance(proc, warm.Forked) and same else "spawned")
print("passed" if warm.check(Path(CONFIG)) else "failed")
env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "REDIS_URL": URL}
assert warm.claim(["--concurrency", "4", "--config", CONFIG], env) is proc
from producers.client import Client
from tests.conftest import openai_line, wait_until
with Client(URL) as client:
    batch_id = client.submit_many([openai_line(f"f-{i}", "x") for i in range(3)]).batch_id
    wait_until(lambda: client.batch(batch_id).finished, 60, "the batch to finish")
    print(client.batch(batch_id).counts.completed)
proc.send_signal(signal.SIGTERM)
print(proc.wait(timeout=30))
"""


def test_a_forked_worker_checks_configs_is_claimed_and_runs_as_a_spawned_one(
    redis_url: str, write_config: Callable[[dict[str, object]], Path]
) -> None:
    # Given a process that forks its prestarted worker (as `batchyard run` does),
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    code = f"CONFIG, URL = {str(config)!r}, {redis_url!r}\n" + FORKED
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    # the worker is a fork of it; it checks the config, runs the jobs once claimed, and
    # drains and exits 0 on SIGTERM.
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["forked", "passed", "3", "0"]


@pytest.mark.parametrize("fork", [False, True])
def test_a_waiting_worker_ends_with_its_parent(fork: bool) -> None:
    # Given a parent that prestarts a worker (spawned, or forked) and is then killed,
    code = (
        f"import os, signal; from workers import warm; warm.prestart(fork={fork}); "
        "print(warm._waiting[0].proc.pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    parent = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert parent.returncode == -signal.SIGKILL
    child = int(parent.stdout.split()[0])
    # the worker it left waiting ends too (EOF on its stdin).
    wait_until(lambda: not _alive(child), 30, "the orphaned prestarted worker to exit")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def configs(write_config: Callable[[dict[str, object]], Path], tmp_path: Path) -> tuple[Path, Path]:
    """A config the supervisor's check passes, and one with a mistake it does not."""
    good = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  ep:\n    provider: mock\n    latency: 5\n")
    return good, bad


def test_a_waiting_worker_checks_configs_and_can_still_be_claimed(
    redis_url: str, configs: tuple[Path, Path], tmp_path: Path
) -> None:
    # Given a prestarted worker,
    good, bad = configs
    warm.prestart()
    # a config the supervisor's check passes passes its check, one with a mistake does not
    # (the caller then checks it itself, to report the mistake),
    assert warm.check(good)
    assert not warm.check(bad)
    assert not warm.check(tmp_path / "missing.yaml")
    # and after checking, it is claimed and runs jobs as a cold start would.
    claim_and_run(good, redis_url, 3)


def test_a_check_asked_ahead_is_answered_when_taken(
    redis_url: str, configs: tuple[Path, Path], tmp_path: Path
) -> None:
    # Given a prestarted worker asked ahead about a good config and a bad one,
    good, bad = configs
    warm.prestart()
    warm.ask(good)
    warm.ask(bad)
    # each check takes the answer for its own config, in whatever order they are taken (an
    # answer read past is dropped, and that config is asked again when it is checked),
    assert not warm.check(bad)
    assert not warm._waiting[0].asked
    assert warm.check(good)
    assert not warm.check(tmp_path / "missing.yaml")
    # and the worker is then claimed and runs jobs as a cold start would.
    claim_and_run(good, redis_url, 3)


def test_no_worker_waiting_or_one_that_died_leaves_the_check_to_the_caller(
    write_config: Callable[[dict[str, object]], Path],
) -> None:
    good = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    assert not warm.check(good)
    warm.prestart()
    waiting = warm._waiting[0]
    waiting.proc.kill()
    waiting.proc.wait()
    assert not warm.check(good)


def hand_early(
    redis_url: str, config: Path
) -> tuple[subprocess.Popen[bytes], list[str], dict[str, str]]:
    """A prestarted worker handed its arguments early (as `batchyard run` does for a new
    batch on the Redis it started, before its own imports): it, its argv and its env."""
    warm.prestart()
    proc = warm._waiting[0].proc
    argv = ["--concurrency", "4", "--config", str(config)]
    env = cold_env(REDIS_URL=redis_url)
    warm.hand_early(argv, env, config)
    return proc, argv, env


def test_a_worker_handed_over_early_runs_before_its_claim_and_is_claimed_as_it_runs(
    redis_url: str, configs: tuple[Path, Path]
) -> None:
    # Given a prestarted worker handed its arguments early,
    good, _ = configs
    proc, argv, env = hand_early(redis_url, good)
    # its check of that config is answered,
    assert warm.check(good)
    # it runs jobs before anyone claims it,
    with Client(redis_url) as client:
        batch_id = client.submit_many([openai_line(f"e-{i}", "x") for i in range(3)]).batch_id
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch to finish")
        assert client.batch(batch_id).counts.completed == 3
    # and a claim with the same arguments and environment takes it, running.
    assert warm.claim(argv, env) is proc
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("differs", ["argv", "env"])
def test_a_claim_for_other_arguments_ends_a_worker_handed_over_early(
    redis_url: str, configs: tuple[Path, Path], differs: str
) -> None:
    # Given a worker handed its arguments early and started,
    good, _ = configs
    proc, argv, env = hand_early(redis_url, good)
    assert warm.check(good)
    # a claim that asks for other arguments, or another environment, does not take it
    # (the caller starts a worker cold): it is stopped and waited for (SIGTERM: it drains
    # and exits 0, or, still starting, has no handler for it yet and ends on it).
    if differs == "argv":
        assert warm.claim(["--concurrency", "5", "--config", str(good)], env) is None
    else:
        assert warm.claim(argv, cold_env(REDIS_URL=redis_url, BATCHYARD_LOG_LEVEL="DEBUG")) is None
    assert proc.returncode in (0, -signal.SIGTERM)
    assert not warm._waiting


def test_a_worker_handed_over_early_whose_check_fails_does_not_start(
    redis_url: str, configs: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a worker handed its arguments early with a config that has a mistake,
    _, bad = configs
    proc, _, _ = hand_early(redis_url, bad)
    # its check fails (the caller reports the mistake itself),
    assert not warm.check(bad)
    # and it exits without starting, and without a word of its own about it.
    wait_until(lambda: proc.poll() is not None, 30, "the worker to exit")
    assert proc.returncode == 0
    assert "batchyard worker" not in capfd.readouterr().err
