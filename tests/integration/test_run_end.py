"""How a finished `batchyard run` ends its embedded Redis: killed when its data goes with the
run's state, and only once that state can no longer be resumed (#22)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from producers import run
from tests.conftest import openai_line, read_jsonl, write_jsonl
from workers.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("keep_state", [False, True])
def test_a_finished_run_kills_its_redis_only_when_its_state_goes(
    tmp_path: Path,
    write_config: Callable[[dict[str, object]], Path],
    monkeypatch: pytest.MonkeyPatch,
    keep_state: bool,
) -> None:
    # Given a run on an embedded Redis, whose kills are recorded with whether the run's state
    # could still be resumed at that moment,
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    output = tmp_path / "out.jsonl"
    record = output.with_name(output.name + run.STATE_SUFFIX) / "run.json"
    kills: list[bool] = []
    crash = RedisServer.crash

    def recorded_crash(self: RedisServer) -> None:
        kills.append(record.exists())
        crash(self)

    monkeypatch.setattr(RedisServer, "crash", recorded_crash)
    rows = [openai_line(f"r-{i}", "hi") for i in range(5)]
    report = run.run_batch(
        write_jsonl(tmp_path / "in.jsonl", rows),
        output,
        None,
        config_path=config,
        console=Console(file=io.StringIO()),
        keep_state=keep_state,
    )
    # when the batch completes, every result is written;
    assert report.collected.succeeded == 5
    assert len(read_jsonl(output)) == 5
    if keep_state:
        # a run that keeps its state shuts its Redis down (its AOF complete), unkilled,
        assert kills == []
        assert record.exists()
    else:
        # and one that throws its state away kills its Redis once, after its record is gone
        # (a run stopped then starts over instead of resuming from an AOF short of its last
        # second), and leaves no state.
        assert kills == [False]
        assert not record.parent.exists()
