"""`batchyard run` starts its embedded Redis before its imports (`producers.early_redis`, #22):
only for a new batch, taken by the run that wants it, and gone with its directory otherwise."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
from rich.console import Console

from producers import early_redis, run
from tests.conftest import ROOT, cli_env, openai_line, read_jsonl, wait_until, write_jsonl
from workers import warm
from workers.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_spare_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Embedded Redis (no REDIS_URL); nothing `start` made outlives a test."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield
    early_redis.discard()


@pytest.mark.parametrize(
    ("args", "output"),
    [
        (["in.jsonl"], "results.jsonl"),
        (["in.jsonl", "-o", "a.jsonl"], "a.jsonl"),
        (["-oa.jsonl", "in.jsonl"], "a.jsonl"),
        (["in.jsonl", "--output", "d/a.jsonl", "--keep-state"], "d/a.jsonl"),
        (["in.jsonl", "--output=a.jsonl", "-p", "2", "--concurrency=8", "-c", "-o"], "a.jsonl"),
        (
            ["--config", "c.yaml", "in.jsonl", "-e", "e.jsonl", "--grace", "3", "-p2"],
            "results.jsonl",
        ),
        (["in.jsonl", "--fresh", "-o", "a.jsonl"], None),
        (["in.jsonl", "--help"], None),
        (["in.jsonl", "-o"], None),
        (["in.jsonl", "--", "-o", "a.jsonl"], None),
        (["in.jsonl", "--keep-state=yes"], None),
    ],
)
def test_the_output_is_read_from_the_command_line_or_not_at_all(
    args: list[str], output: str | None
) -> None:
    # Every option's value is skipped, -o/--output's in each form read; a --fresh run (its
    # state goes), --help, or anything not surely understood gives no output to start for.
    found = early_redis.output_of(args)
    assert found == (None if output is None else Path(output))


def _spawns(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories of every redis-server started from now on."""
    spawned: list[Path] = []
    spawn = RedisServer.spawn

    def counted(self: RedisServer) -> None:
        spawned.append(self.dir)
        spawn(self)

    monkeypatch.setattr(RedisServer, "spawn", counted)
    return spawned


def test_a_new_batch_runs_on_the_redis_started_for_it(
    tmp_path: Path,
    write_config: Callable[[dict[str, object]], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a Redis started early for a run's output,
    monkeypatch.chdir(tmp_path)
    spawned = _spawns(monkeypatch)
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", "hi") for i in range(5)])
    early_redis.start(["in.jsonl", "-o", "out.jsonl"])
    state = Path("out.jsonl" + run.STATE_SUFFIX)
    assert spawned == [state / "redis"]
    # when that run starts a new batch, it runs on that Redis and starts none of its own,
    report = run.run_batch(
        Path("in.jsonl"),
        Path("out.jsonl"),
        None,
        config_path=config,
        console=Console(file=io.StringIO()),
    )
    assert report.collected.succeeded == 5
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 5
    assert spawned == [state / "redis"]
    # and leaves no state, as any finished run.
    assert not state.exists()
    assert early_redis._spare is None


def test_a_redis_started_for_another_output_or_a_resume_is_not_taken(
    tmp_path: Path,
    write_config: Callable[[dict[str, object]], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    spawned = _spawns(monkeypatch)
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    write_jsonl(tmp_path / "in.jsonl", [openai_line("r", "hi")])
    # A state directory there already (a resume, or one to start over): nothing is started.
    (tmp_path / ("kept.jsonl" + run.STATE_SUFFIX)).mkdir()
    early_redis.start(["in.jsonl", "-o", "kept.jsonl"])
    assert spawned == []
    # REDIS_URL set: nothing is started.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    early_redis.start(["in.jsonl", "-o", "out.jsonl"])
    assert spawned == []
    monkeypatch.delenv("REDIS_URL")
    # Given a Redis started for one output, a run writing another starts its own,
    early_redis.start(["in.jsonl", "-o", "out.jsonl"])
    other = run.run_batch(
        Path("in.jsonl"),
        Path("other.jsonl"),
        None,
        config_path=config,
        console=Console(file=io.StringIO()),
    )
    assert other.collected.succeeded == 1
    assert len(spawned) == 2
    # and the one nobody took is stopped, with the directory made for it.
    server = early_redis._spare[0] if early_redis._spare else None
    assert server is not None and server.proc is not None
    early_redis.discard()
    assert server.proc.poll() is not None
    assert not (tmp_path / ("out.jsonl" + run.STATE_SUFFIX)).exists()
    assert (tmp_path / ("kept.jsonl" + run.STATE_SUFFIX)).exists()


def _redis_servers_in(directory: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "redis-server" in (proc.info["name"] or "") and any(
            str(directory) in arg for arg in cmdline
        ):
            found.append(proc)
    return found


def _python(
    args: list[str], cwd: Path, timeout_s: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in `cwd` with `env` (the CLI tests' by default), its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        env=cli_env() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_a_run_that_fails_before_it_starts_leaves_no_redis_and_no_state(tmp_path: Path) -> None:
    # Given an input file that does not exist, `batchyard run` (which starts its Redis first)
    proc = _python(["-m", "batchyard", "run", "missing.jsonl", "-o", "out.jsonl"], tmp_path)
    # reports it in one line, as before,
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.jsonl" in lines[0], proc.stderr
    # and leaves neither a state directory nor a Redis running in one.
    assert list(tmp_path.iterdir()) == []
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")


def test_a_run_whose_config_has_a_mistake_leaves_no_redis_and_no_state(tmp_path: Path) -> None:
    # Given a config with an unknown provider, `batchyard run` (its Redis and worker started
    # before the config is read)
    (tmp_path / "bad.yaml").write_text("endpoints:\n  ep:\n    provider: nosuch\n")
    write_jsonl(tmp_path / "in.jsonl", [openai_line("r", "hi")])
    args = ["-m", "batchyard", "run", "in.jsonl", "-o", "out.jsonl", "-c", "bad.yaml"]
    proc = _python(args, tmp_path)
    # reports it in one line (the worker, which checked it too, says nothing),
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nosuch" in lines[0], proc.stderr
    # and leaves neither a state directory nor a Redis running in one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "in.jsonl"]
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")


def boom_plugin(tmp_path: Path) -> Path:
    """A third-party plugin (registered by its entry point) that fails when built while
    `BOOM` is set; its site directory (for PYTHONPATH)."""
    site = tmp_path / "site"
    meta = site / "boom_plugin-0.1.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: boom-plugin\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[batchyard.plugins]\nboom = boom_plugin:Boom\n")
    (site / "boom_plugin.py").write_text(
        "import os\n"
        "from workers.plugins import Plugin\n\n\n"
        "class Boom(Plugin):\n"
        "    name = 'boom'\n\n"
        "    def __init__(self, config, redis, namespace):\n"
        "        if os.environ.get('BOOM'):\n"
        "            raise RuntimeError('boom cannot start: no licence server')\n"
    )
    (tmp_path / "c.yaml").write_text(
        "endpoints:\n  m:\n    provider: mock\n    model: m\nplugins:\n  boom: {}\n"
    )
    return site


def test_a_run_whose_workers_cannot_start_stops_with_their_error_and_resumes(
    tmp_path: Path,
) -> None:
    # Given workers that fail at every start (a plugin that cannot be built; the run itself
    # never builds plugins),
    site = boom_plugin(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r{i}", "hi") for i in range(3)])
    args = ["-m", "batchyard", "run", "in.jsonl", "-o", "out.jsonl", "-c", "c.yaml"]
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + str(site)
    proc = _python(args, tmp_path, timeout_s=120, env={**env, "BOOM": "1"})
    # `batchyard run` gives up after a few starts instead of waiting for them for good,
    assert proc.returncode == 2, proc.stderr
    assert "worker processes keep failing at start-up (exit 1, 3 times in a row" in proc.stderr
    assert "boom cannot start" in proc.stderr  # with their own errors shown,
    # keeps its state and stops its Redis,
    assert (tmp_path / "out.jsonl.batchyard" / "run.json").exists()
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")
    # and the same command, with workers that can start, resumes and completes the batch.
    proc = _python(args, tmp_path, timeout_s=120, env=env)
    assert proc.returncode == 0, proc.stderr
    ids = sorted(str(row["custom_id"]) for row in read_jsonl(tmp_path / "out.jsonl"))
    assert ids == ["r0", "r1", "r2"]
    assert "resuming batch_" in proc.stderr and "0 of 3 requests already have" in proc.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BATCHYARD_EVENT_LOOP", "no-such-loop", "must be 'uvloop' or 'asyncio'"),
        ("BATCHYARD_IDLE_POLL_MS", "abc", "valid integer"),
    ],
)
def test_a_wrong_setting_is_one_line_at_once_and_leaves_nothing(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    # Given a wrong BATCHYARD_* value (the event loop was found by the workers only, after
    # three failed starts; any other was a traceback from the run's first lines),
    write_jsonl(tmp_path / "in.jsonl", [openai_line("r", "hi")])
    args = ["-m", "batchyard", "run", "in.jsonl", "-o", "out.jsonl"]
    proc = _python(args, tmp_path, env=cli_env(**{name: value}))
    # the run says so in one line naming the variable and its value,
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {name}={value!r}: "), proc.stderr
    assert says in lines[0]
    # and leaves neither a state directory nor a Redis running in one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")


def test_a_run_whose_plugin_cannot_start_runs_no_job_and_stops_with_its_error(
    tmp_path: Path,
) -> None:
    # Given a third-party plugin (registered by its entry point) that fails when built,
    site = boom_plugin(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r{i}", "hi") for i in range(3)])
    env = cli_env(BOOM="1")
    env["PYTHONPATH"] += os.pathsep + str(site)
    args = ["-m", "batchyard", "run", "in.jsonl", "-o", "out.jsonl", "-c", "c.yaml"]
    proc = _python(args, tmp_path, timeout_s=120, env=env)
    # the run stops with the plugin's error (it waited for ever on workers that ran no job),
    assert proc.returncode == 2, proc.stderr
    assert "worker processes keep failing at start-up" in proc.stderr
    assert "RuntimeError: boom cannot start: no licence server" in proc.stderr
    # no worker took a request to fail it or hold it (each used to fail every one it got),
    assert "failed to process message" not in proc.stderr
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    # and its state is kept for a resume.
    assert (tmp_path / "out.jsonl.batchyard" / "run.json").exists()
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")


def test_the_readme_run_still_leaves_only_its_files(tmp_path: Path) -> None:
    # The same run on its early Redis: output and errors, nothing else.
    hello = str(ROOT / "examples" / "hello.jsonl")
    proc = _python(["-m", "batchyard", "run", hello], tmp_path, timeout_s=120)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["results.errors.jsonl", "results.jsonl"]
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")


def test_a_ctrl_c_during_the_start_leaves_no_redis_and_no_state(tmp_path: Path) -> None:
    # Given a run whose start is interrupted (Ctrl-C) once its Redis is started, while the
    # worker is being prestarted (the imports before the fork),
    write_jsonl(tmp_path / "in.jsonl", [openai_line("r", "hi")])
    code = (
        "import sys\n"
        "sys.argv = ['batchyard', 'run', 'in.jsonl', '-o', 'out.jsonl']\n"
        "from workers import warm\n"
        "def interrupted(**options): raise KeyboardInterrupt\n"
        "warm.prestart = interrupted\n"
        "from batchyard.launch import main\n"
        "main()\n"
    )
    proc = _python(["-c", code], tmp_path)
    # the run ends on it, and leaves neither a state directory nor a Redis running in one.
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]
    wait_until(lambda: not _redis_servers_in(tmp_path), 10, "its Redis to end")


@pytest.mark.parametrize(
    "options",
    [
        ["-o", "out.jsonl", "--config", "c.yaml"],
        ["--output=out.jsonl", "-cc.yaml", "--concurrency=8", "--grace", "2.5", "-p", "1"],
    ],
)
def test_a_run_takes_the_worker_it_handed_over_early_and_starts_no_other(
    tmp_path: Path, options: list[str]
) -> None:
    # Given a new batch on the run's own Redis (its worker is forked and handed its
    # arguments before the run's imports, `early_redis.hand_worker_early`),
    (tmp_path / "c.yaml").write_text("endpoints:\n  mock:\n    provider: mock\n")
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", "hi") for i in range(20)])
    cmd = [sys.executable, "-m", "batchyard", "run", "in.jsonl", *options]
    run_proc = psutil.Popen(cmd, env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL)
    # Each child's name as last seen (a redis-server is a python child with the run's
    # command line too, between its fork and its exec), and its last command line seen (an
    # exited one, not reaped yet, has none).
    children: dict[int, tuple[str, list[str]]] = {}
    while run_proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for child in run_proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    name, line = child.name(), child.cmdline()
                    children[child.pid] = (name, line or children.get(child.pid, ("", []))[1])
    # the run completes on that worker: the supervisor's claim asked for the arguments and
    # environment it was handed (a mismatch would have ended it and spawned
    # `python -m workers.process`).
    assert run_proc.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20
    assert [line for name, line in children.values() if "python" in name] == [cmd]


def test_run_options_are_read_by_their_long_names_the_last_one_winning() -> None:
    args = ["in.jsonl", "-c", "a.yaml", "--concurrency=8", "--config", "b.yaml", "-p2", "-oo"]
    assert early_redis.options_of(args) == {
        "--config": "b.yaml",
        "--concurrency": "8",
        "--processes": "2",
        "--output": "o",
    }
    assert early_redis.options_of(["in.jsonl", "--fresh"]) is None


def test_a_worker_is_handed_over_early_only_for_a_new_batch_and_values_run_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    handed: list[tuple[list[str], str, Path | None]] = []

    def hand_early(argv: list[str], env: dict[str, str], config: Path | None) -> None:
        handed.append((argv, env["REDIS_URL"], config))

    monkeypatch.setattr(warm, "hand_early", hand_early)
    # No Redis started here (a resume: its state is there already): nothing is handed over.
    (tmp_path / ("kept.jsonl" + run.STATE_SUFFIX)).mkdir()
    early_redis.start(["in.jsonl", "-o", "kept.jsonl"])
    early_redis.hand_worker_early(["in.jsonl", "-o", "kept.jsonl"])
    # Values `run` refuses: nothing either (the worker waits, and `run` reports them).
    for bad in (["--concurrency", "0"], ["--concurrency", "x"], ["--grace", "-1"]):
        early_redis.start(["in.jsonl", *bad])
        early_redis.hand_worker_early(["in.jsonl", *bad])
        early_redis.discard()
    assert handed == []
    # A new batch with values read for sure: the supervisor's arguments and the new Redis.
    args = ["in.jsonl", "-c", "c.yaml", "--concurrency=8"]
    early_redis.start(args)
    assert early_redis._spare is not None
    url = early_redis._spare[0].url
    early_redis.hand_worker_early(args)
    assert handed == [
        (["--concurrency", "8", "--grace", "10.0", "--config", "c.yaml"], url, Path("c.yaml"))
    ]


def _client_flags(client: redis.Redis) -> list[str]:
    """The flags of every connection but this one (`U`: through the Unix socket)."""
    me = client.client_id()
    return [str(c["flags"]) for c in client.client_list() if int(c["id"]) != me]


@pytest.mark.parametrize("resumed", [False, True])
def test_a_run_and_its_workers_reach_its_redis_through_its_unix_socket(
    tmp_path: Path, resumed: bool
) -> None:
    # Given a run of calls slow enough to look at (a new batch starts its Redis early; a
    # resumed one, whose state is there already, starts it in `run`),
    config = "endpoints:\n  mock:\n    provider: mock\n    latency_ms: 300\n"
    (tmp_path / "c.yaml").write_text(config)
    write_jsonl(tmp_path / "in.jsonl", [openai_line(f"r-{i}", "hi") for i in range(40)])
    state = tmp_path / "out.jsonl.batchyard"
    if resumed:
        state.mkdir()
    cmd = [sys.executable, "-m", "batchyard", "run", "in.jsonl", "-o", "out.jsonl", "-c", "c.yaml"]
    run_proc = subprocess.Popen(
        [*cmd, "--concurrency", "4"], env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL
    )
    try:
        sock = state / "redis" / "redis.sock"
        wait_until(sock.exists, 60, "the Redis socket")
        client = redis.Redis(unix_socket_path=str(sock))
        try:
            # while it runs, the run's client and its worker's connections (fetch, acks,
            # results) all come through the socket, none through TCP,
            wait_until(lambda: len(_client_flags(client)) >= 3, 60, "the worker's connections")
            flags = _client_flags(client)
            assert all("U" in f for f in flags), flags
        finally:
            client.close()
        # and the run completes as ever, the socket gone with its state.
        assert run_proc.wait(timeout=120) == 0
    finally:
        if run_proc.poll() is None:
            run_proc.kill()
            run_proc.wait()
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 40
    assert not state.exists()


def test_a_redis_server_listens_on_a_unix_socket_only_where_its_path_fits(
    tmp_path: Path,
) -> None:
    # A server asked for a socket listens on it too, and `local_url` names it (a path
    # with a space, a percent sign and a question mark written as a URL's path must be),
    odd = tmp_path / "r 100%?"
    odd.mkdir()
    with RedisServer(dir=odd, unix_socket=True) as server:
        assert server.socket == odd / "redis.sock"
        client = redis.Redis.from_url(server.local_url)
        try:
            assert client.ping() and "U" in str(client.client_info()["flags"])
        finally:
            client.close()
    # where the path is longer than a socket's address takes, it is TCP only, as ever.
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with RedisServer(dir=deep, unix_socket=True) as server:
        assert server.socket is None and server.local_url == server.url
        assert redis.Redis.from_url(server.local_url).ping()
    assert RedisServer(unix_socket=False).local_url.startswith("redis://127.0.0.1:")
    # Where the server cannot make its socket (a file system without them; here the path is
    # taken by a directory), it starts again on TCP alone.
    taken = tmp_path / "taken"
    (taken / "redis.sock").mkdir(parents=True)
    with RedisServer(dir=taken, unix_socket=True) as server:
        assert server.socket is None and server.local_url == server.url
        assert redis.Redis.from_url(server.local_url).ping()
