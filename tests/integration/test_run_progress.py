"""`batchyard run`'s follow loop: its progress bar is drawn once per step at a terminal and only
at the ends elsewhere; its output files' cursor is saved at most every SAVE_S and at the end."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console
from rich.progress import Progress

from producers import run
from producers.collect import Cursor
from tests.conftest import openai_line, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration


def _run(
    tmp_path: Path,
    redis_url: str,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    terminal: bool,
    keep_state: bool = False,
) -> tuple[dict[str, int], str]:
    """Bar draws, follow-loop steps and cursor saves of one small run, and what the console
    showed."""
    counts = {"draws": 0, "steps": 0, "saves": 0}
    draw = Progress.get_renderable
    step = run._Writer.step
    save = Cursor.save

    def counted_draw(self: Progress) -> Any:
        counts["draws"] += 1
        return draw(self)

    def counted_step(self: run._Writer, **options: Any) -> None:
        counts["steps"] += 1
        step(self, **options)

    def counted_save(self: Cursor, *args: Any) -> None:
        counts["saves"] += 1
        save(self, *args)

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setattr(Cursor, "save", counted_save)
    monkeypatch.setattr(Progress, "get_renderable", counted_draw)
    monkeypatch.setattr(run._Writer, "step", counted_step)
    name = "tty" if terminal else "plain"
    rows = [openai_line(f"{name}-{i}", "hi") for i in range(20)]
    shown = io.StringIO()
    console = Console(file=shown, force_terminal=terminal, width=120)
    report = run.run_batch(
        write_jsonl(tmp_path / f"{name}.jsonl", rows),
        tmp_path / f"{name}.out.jsonl",
        None,
        concurrency=2,
        config_path=config,
        console=console,
        keep_state=keep_state,
    )
    assert report.collected.succeeded == 20
    assert len(read_jsonl(tmp_path / f"{name}.out.jsonl")) == 20
    return counts, shown.getvalue()


Run = Callable[..., tuple[dict[str, int], str]]


@pytest.fixture
def small_run(
    tmp_path: Path,
    redis_url: str,
    write_config: Callable[[dict[str, object]], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    """`_run` of a batch that takes several follow steps (20 calls of 100 ms, two at a time),
    in `tmp_path` or a directory of it."""
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 100}}})

    def go(
        *, terminal: bool = False, where: str = "", keep_state: bool = False
    ) -> tuple[dict[str, int], str]:
        (tmp_path / where).mkdir(exist_ok=True)
        directory = tmp_path / where
        return _run(
            directory, redis_url, config, monkeypatch, terminal=terminal, keep_state=keep_state
        )

    return go


def test_the_bar_is_drawn_per_step_at_a_terminal_and_only_at_the_ends_elsewhere(
    small_run: Run,
) -> None:
    # Given a batch that takes several follow steps, when it runs with stderr not a terminal,
    # the bar is drawn when it starts and ends only (nothing of it shows in between), not on
    # every step nor by a refresh thread;
    counts, shown = small_run(terminal=False)
    assert counts["steps"] >= 5
    assert counts["draws"] <= 4
    assert "20/20" in shown
    # and at a terminal, it is drawn on every step, so the numbers move as results arrive.
    counts, shown = small_run(terminal=True)
    assert counts["steps"] >= 5
    assert counts["draws"] >= counts["steps"]
    assert "20/20" in shown


def test_the_cursor_is_saved_when_save_s_has_passed_and_when_the_run_ends(
    small_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run of several follow steps whose cursor may wait as long as it likes,
    monkeypatch.setattr(run, "SAVE_S", 1e9)
    counts, _ = small_run(keep_state=True)
    # the results are written on every step and the cursor saved once, at the end,
    assert counts["steps"] >= 5
    assert counts["saves"] == 1
    # pointing past every line of the output (kept with the run's state; without it, a
    # finished run removes both).
    cursor = orjson.loads((tmp_path / "plain.out.jsonl.cursor").read_bytes())
    assert cursor["out_bytes"] == (tmp_path / "plain.out.jsonl").stat().st_size
    # With no wait at all, each step that wrote something saves it.
    monkeypatch.setattr(run, "SAVE_S", 0.0)
    counts, _ = small_run(where="again")
    assert counts["saves"] > 1


def test_the_follow_loop_steps_often_in_its_first_second_and_near_the_end() -> None:
    from producers.progress import Pace

    # In the first second a small batch may be about to end: step often.
    assert run.step_gap(Pace(0.0, None), 0.5) == run.FIRST_STEP_S
    # Under way with most of it left: step every STEP_S (each step reads and fsyncs).
    assert run.step_gap(Pace(1000.0, 30.0), 5.0) == run.STEP_S
    assert run.step_gap(Pace(0.0, None), 5.0) == run.STEP_S
    # When the rest should be done within two steps, step often again: its end is seen at
    # once, not up to a whole STEP_S late.
    assert run.step_gap(Pace(4000.0, 0.3), 5.0) == run.FIRST_STEP_S
    assert run.step_gap(Pace(4000.0, 2 * run.STEP_S), 5.0) == run.STEP_S


def test_the_follow_loop_steps_every_end_step_once_every_request_left_is_in_flight() -> None:
    from producers.progress import Pace

    # Given no more requests left than calls in flight (a 12-line batch from its start, a
    # large one's last few hundred), any result may be the last: step every END_STEP_S,
    # whatever the pace says or how long the loop has run.
    assert run.step_gap(Pace(0.0, None), 0.1, all_in_flight=True) == run.END_STEP_S
    assert run.step_gap(Pace(10.0, 30.0), 5.0, all_in_flight=True) == run.END_STEP_S
    assert run.END_STEP_S < run.FIRST_STEP_S
