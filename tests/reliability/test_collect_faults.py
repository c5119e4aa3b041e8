"""`collect` against a Redis that is not up yet and output file systems that refuse writes (#18)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producers.client import Client
from schemas.config import load_config
from tests.conftest import WorkerPool, cli_env, openai_line, read_jsonl, wait_until
from workers.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 300


def collect_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "batchyard", "collect", *args]


@pytest.mark.timeout(120)
def test_collect_follow_started_before_redis_collects_everything(
    tmp_path: Path, worker_pool: Callable[..., WorkerPool], write_config: Callable[..., Path]
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = cli_env(url, BATCHYARD_CONFIG=str(config))
    # Given `collect --follow` started while nothing listens on Redis's port,
    log = tmp_path / "collect.log"
    with log.open("w") as stderr:
        follower = subprocess.Popen(
            collect_cmd("early", "-o", "out.jsonl", "--follow"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until(
            lambda: "waiting for Redis" in log.read_text() or follower.poll() is not None,
            30,
            "the collector to wait for Redis",
        )
        assert follower.poll() is None, "it waits rather than exiting: " + log.read_text()
        # when Redis comes up and the batch is submitted and run,
        with RedisServer(port=port), Client(url, config=load_config(config)) as client:
            client.submit_many([openai_line(f"e-{i}", "x") for i in range(N)], batch_id="early")
            worker_pool(env, "--concurrency", "20")
            # then it collects every result once and exits 0.
            follower.wait(timeout=90)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    err = log.read_text()
    assert follower.returncode == 0, err
    assert "Traceback" not in err
    ids = Counter(str(row["custom_id"]) for row in read_jsonl(tmp_path / "out.jsonl"))
    assert ids == Counter({f"e-{i}": 1 for i in range(N)})


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Small tmpfs mounts under the test's directory (the tests run as root, as CI does)."""
    made: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        made.append(path)
        return path

    yield mount
    for path in made:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("case", "options", "says"),
    [
        ("read-only directory", "ro,size=1m", "Read-only file system"),
        ("full file system", "size=16k", "No space left on device"),
    ],
)
def test_collect_to_a_file_system_that_refuses_is_one_line_and_loses_nothing(
    tmp_path: Path,
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    mounts: Callable[[str, str], Path],
    case: str,
    options: str,
    says: str,
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    env = cli_env(redis_url, BATCHYARD_CONFIG=str(config))
    with Client(redis_url, config=load_config(config)) as client:
        batch_id = client.submit_many([openai_line(f"f-{i}", "x" * 50) for i in range(N)]).batch_id
        worker_pool(env, "--concurrency", "20")
        wait_until(lambda: client.batch(batch_id).finished, 60, "the batch")
    bad = mounts("bad", options)
    # When collect writes where the file system refuses (N results are far more than 16 KiB),
    proc = subprocess.run(
        collect_cmd(batch_id, "-o", str(bad / "out.jsonl")),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then it says so in one line naming the path, with exit code 2,
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert says in lines[0] and str(bad) in lines[0], lines[0]
    # and a later collect to a good path writes every result once.
    good = subprocess.run(
        collect_cmd(batch_id, "-o", "good.jsonl"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    ids = Counter(str(row["custom_id"]) for row in read_jsonl(tmp_path / "good.jsonl"))
    assert ids == Counter({f"f-{i}": 1 for i in range(N)})
