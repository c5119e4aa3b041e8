"""Interrupted `batchyard run` and `batchyard worker`: nothing lost, nothing paid twice, and no
process outlives the command (issue #18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from producers.client import Client
from schemas.config import load_config
from tests.conftest import WorkerPool, cli_env, openai_line, read_jsonl, wait_until, write_jsonl
from tests.reliability.conftest import Figures
from workers.lifetime import SignalLatch
from workers.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 80
CONCURRENCY = 4
GRACE_S = 10
#: Server latency: 80 requests take ~6 s at concurrency 4, so an interrupt lands mid-batch.
LATENCY_MS = 300


def fake_config(write_config: Callable[..., Path], server: Any) -> Path:
    return write_config(
        {
            "endpoints": {
                "fake": {
                    "provider": "openai",
                    "base_url": server.openai_url,
                    "api_key": "sk-test",
                    "model": "gpt-test",
                }
            }
        }
    )


def start_run(tmp_path: Path, config: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`batchyard run` with an embedded Redis, in its own process group."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchyard",
            "run",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "--config",
            str(config),
            "--concurrency",
            str(CONCURRENCY),
            "--grace",
            str(GRACE_S),
            *extra,
        ],
        env=cli_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def gone(proc: psutil.Process) -> bool:
    """Exited (a zombie left to an init that does not reap counts as exited)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_all_gone(procs: list[psutil.Process], timeout_s: float, what: str) -> None:
    try:
        wait_until(lambda: all(gone(p) for p in procs), timeout_s, what)
    except BaseException:
        print("still running:", [(p.pid, p.cmdline()) for p in procs if not gone(p)])
        raise
    finally:
        for p in procs:  # never leave one behind for the next test
            if not gone(p):
                p.kill()


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"process did not exit within {timeout_s}s")


def custom_ids(path: Path) -> Counter[str]:
    return Counter(str(row["custom_id"]) for row in read_jsonl(path))


def interrupt(proc: subprocess.Popen[bytes], how: str) -> None:
    if how == "three SIGTERMs 10 ms apart":
        for _ in range(3):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.01)  # the spacing under test, not a wait for a condition
    elif how == "SIGTERM to the process group":
        os.killpg(proc.pid, signal.SIGTERM)
    elif how == "SIGINT to the process group":  # what Ctrl-C in a terminal does
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(getattr(signal, how))


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("how", "code"),
    [
        ("SIGINT", 130),
        ("SIGTERM", 143),
        ("SIGKILL", -9),
        ("three SIGTERMs 10 ms apart", 143),
        ("SIGTERM to the process group", 143),
        ("SIGINT to the process group", 130),
    ],
)
def test_an_interrupted_run_keeps_its_results_and_resumes_paying_nothing_twice(
    tmp_path: Path,
    write_config: Callable[..., Path],
    fake_server: Callable[..., Any],
    figures: Figures,
    how: str,
    code: int,
) -> None:
    server = fake_server(latency_ms=LATENCY_MS)
    config = fake_config(write_config, server)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", f"q{i}") for i in range(N)])
    out = tmp_path / "out.jsonl"
    # Given `batchyard run` a quarter of the way through a slow batch,
    run = start_run(tmp_path, config)
    wait_until(lambda: lines(out) >= N // 4, 60, "a quarter of the results on disk")
    children = descendants(run.pid)
    assert len(children) >= 2, "an embedded redis-server and a worker process"
    # when it is interrupted,
    written_before = lines(out)
    in_flight = server.requests_arrived - server.requests_seen
    calls_at_interrupt = server.requests_arrived
    interrupt(run, how)
    # then it exits within its grace with the shell's code for the signal,
    assert wait_exit(run, GRACE_S + 5) == code
    # every process it started ends too (after a SIGKILL, by itself),
    wait_all_gone(children, GRACE_S + 5 if code != -9 else 10, "the run's children to exit")
    # the output already holds the results it had (and, stopped gracefully, what was in flight),
    kept = custom_ids(out)
    assert len(kept) >= written_before
    assert max(kept.values()) == 1
    if code != -9:
        assert (tmp_path / "out.jsonl.batchyard" / "run.json").is_file()
        stderr = run.stderr.read().decode() if run.stderr else ""
        assert "run the same command again to resume" in stderr
    # and the same command again finishes the batch: every custom_id exactly once,
    again = start_run(tmp_path, config)
    assert wait_exit(again, 120) == 0, again.stderr.read().decode() if again.stderr else ""
    resumed = again.stderr.read().decode() if again.stderr else ""
    assert "resuming batch_" in resumed
    assert custom_ids(out) == Counter({f"r-{i}": 1 for i in range(N)})
    # with at most one more provider call per request that was in flight at the interrupt.
    extra = server.requests_arrived - N
    assert extra <= max(in_flight, server.requests_arrived - calls_at_interrupt, 0)
    assert extra <= CONCURRENCY
    figures.add("repeated_calls", extra)
    # Done, the run's state is gone.
    assert not (tmp_path / "out.jsonl.batchyard").exists()


@pytest.mark.timeout(120)
def test_a_rerun_after_completion_with_other_input_says_to_use_fresh(
    tmp_path: Path, write_config: Callable[..., Path], fake_server: Callable[..., Any]
) -> None:
    server = fake_server(latency_ms=LATENCY_MS)
    config = fake_config(write_config, server)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", f"q{i}") for i in range(N)])
    out = tmp_path / "out.jsonl"
    run = start_run(tmp_path, config)
    wait_until(lambda: lines(out) >= 4, 60, "the first results on disk")
    run.send_signal(signal.SIGINT)
    assert wait_exit(run, GRACE_S + 5) == 130
    # Given an interrupted run, when the input changes, the same command refuses in one line
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"s-{i}", f"q{i}") for i in range(10)])
    other = start_run(tmp_path, config)
    assert wait_exit(other, 60) == 2
    stderr = other.stderr.read().decode() if other.stderr else ""
    assert "--fresh" in stderr and "Traceback" not in stderr
    # and --fresh starts over: only the new input's results.
    fresh = start_run(tmp_path, config, "--fresh")
    assert wait_exit(fresh, 60) == 0
    assert custom_ids(out) == Counter({f"s-{i}": 1 for i in range(10)})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["three SIGTERMs 10 ms apart", "SIGTERM to the process group"])
def test_worker_ends_within_its_grace_however_the_signals_come(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    fake_server: Callable[..., Any],
    how: str,
) -> None:
    server = fake_server(latency_ms=LATENCY_MS)
    config = fake_config(write_config, server)
    pool = worker_pool(
        cli_env(redis_url, BATCHYARD_CONFIG=str(config)),
        "--processes",
        "2",
        "--concurrency",
        str(CONCURRENCY),
        "--grace",
        str(GRACE_S),
    )
    with Client(redis_url, config=load_config(config)) as client:
        batch_id = client.submit_many([openai_line(f"w-{i}", "x") for i in range(N)]).batch_id
        wait_until(lambda: client.batch(batch_id).counts.done >= 8, 60, "the first results")
    children = descendants(pool.proc.pid)
    assert len(children) == 2
    # A second signal inside the first's handling once deadlocked the supervisor.
    interrupt(pool.proc, how)
    assert wait_exit(pool.proc, GRACE_S + 5) == 0
    wait_all_gone(children, 5, "the worker processes to exit")


@pytest.mark.timeout(120)
def test_workers_exit_by_themselves_when_their_supervisor_is_killed(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    pool = worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--processes", "2")
    wait_until(lambda: len(descendants(pool.proc.pid)) == 2, 30, "two worker processes")
    children = descendants(pool.proc.pid)
    pool.proc.send_signal(signal.SIGKILL)
    pool.proc.wait()
    wait_all_gone(children, 10, "orphaned workers to exit")


@pytest.mark.timeout(120)
def test_a_worker_whose_redis_is_gone_still_honours_sigterm(
    redis_server: RedisServer,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    fake_server: Callable[..., Any],
) -> None:
    server = fake_server(latency_ms=LATENCY_MS)
    config = fake_config(write_config, server)
    pool = worker_pool(
        cli_env(redis_server.url, BATCHYARD_CONFIG=str(config)),
        "--concurrency",
        str(CONCURRENCY),
        "--grace",
        "3",
    )
    with Client(redis_server.url, config=load_config(config)) as client:
        batch_id = client.submit_many([openai_line(f"w-{i}", "x") for i in range(N)]).batch_id
        wait_until(lambda: client.batch(batch_id).counts.done >= 4, 60, "the first results")
    children = descendants(pool.proc.pid)
    # Given a worker in the middle of calls when its Redis dies,
    redis_server.crash()
    # a SIGTERM still ends it and its children within the grace (+5 s).
    pool.proc.send_signal(signal.SIGTERM)
    wait_exit(pool.proc, 3 + 5)
    wait_all_gone(children, 5, "the worker processes to exit")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_test_fixtures_redis_ends_with_the_killed_test_process(signum: int) -> None:
    """The fixtures' Redis (`die_with_parent=True`) goes with a pytest killed before teardown."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from tests.conftest import fixture_redis\n"
        "server = fixture_redis()\n"
        "print(server.proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", code, root], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    redis = psutil.Process(int(proc.stdout.readline()))
    assert redis.name() == "redis-server"
    proc.send_signal(signum)
    proc.wait()
    wait_all_gone([redis], 10, "the fixture's redis-server to exit")


@pytest.mark.timeout(180)
def test_a_second_ctrl_c_stops_the_run_now_and_the_rerun_pays_only_what_was_cut(
    tmp_path: Path, write_config: Callable[..., Path], fake_server: Callable[..., Any]
) -> None:
    # Given calls that take far longer than anyone waits (after the first, which tells the
    # limiter the endpoint's limits) and a grace long enough to cover them,
    server = fake_server()
    server.faults.push("slow:0", *["slow:120000"] * (N - 1))
    config = fake_config(write_config, server)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", f"q{i}") for i in range(N)])
    run = start_run(tmp_path, config, "--grace", "150")
    wait_until(lambda: server.requests_arrived > CONCURRENCY, 60, "calls in flight")
    children = descendants(run.pid)
    # when Ctrl-C is pressed, and again a moment later,
    os.killpg(run.pid, signal.SIGINT)
    time.sleep(SignalLatch.REPEAT_S + 0.3)  # the spacing under test: a second press, not a burst
    os.killpg(run.pid, signal.SIGINT)
    # the run ends without waiting for the calls in flight: it hung up on every one of them,
    assert wait_exit(run, 60) == 130
    cut = server.requests_arrived
    wait_until(lambda: server.requests_seen == cut, 30, "the server to see the hang-ups")
    assert [r.fault for r in server.requests].count("abandoned") == cut - 1
    wait_all_gone(children, 15, "the run's children to exit")
    stderr = run.stderr.read().decode() if run.stderr else ""
    assert "press Ctrl-C again to stop now" in stderr
    assert "run the same command again to resume" in stderr
    # and the same command again finishes the batch, every custom_id exactly once, calling
    # again only what was in flight when it was cut.
    server.faults.clear()
    again = start_run(tmp_path, config)
    assert wait_exit(again, 120) == 0, again.stderr.read().decode() if again.stderr else ""
    assert custom_ids(tmp_path / "out.jsonl") == Counter({f"r-{i}": 1 for i in range(N)})
    assert server.requests_arrived == cut + N - 1


@pytest.mark.timeout(60)
def test_only_a_later_sigint_makes_a_signal_latch_urgent() -> None:
    latch = SignalLatch()
    latch.install()
    try:
        # A burst (a terminal's SIGINT, a process manager's SIGTERMs) only asks for a drain,
        latch.trigger(signal.SIGINT)
        for _ in range(3):
            latch.trigger(signal.SIGTERM)
        latch.trigger(signal.SIGINT)
        assert latch.event.wait(10)
        assert latch.count == 5 and latch.exit_code == 130
        assert not latch.urgent.is_set()
        # a SIGTERM however late still only drains,
        latch._first_at -= SignalLatch.REPEAT_S
        latch.trigger(signal.SIGTERM)
        # and a SIGINT after REPEAT_S (a second Ctrl-C) means now.
        latch.trigger(signal.SIGINT)
        assert latch.urgent.wait(10)
    finally:
        latch.restore()
