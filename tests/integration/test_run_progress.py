"""`batchyard run`'s progress bar: drawn once per step at a terminal, only at the ends elsewhere."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from producers import run
from tests.conftest import openai_line, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration


def _run(
    tmp_path: Path,
    redis_url: str,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    terminal: bool,
) -> tuple[int, int, str]:
    """(bar draws, follow-loop steps, what the console showed) of one small run."""
    counts = {"draws": 0, "steps": 0}
    draw = Progress.get_renderable
    step = run._Writer.step

    def counted_draw(self: Progress) -> Any:
        counts["draws"] += 1
        return draw(self)

    def counted_step(self: run._Writer) -> None:
        counts["steps"] += 1
        step(self)

    monkeypatch.setenv("REDIS_URL", redis_url)
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
    )
    assert report.collected.succeeded == 20
    assert len(read_jsonl(tmp_path / f"{name}.out.jsonl")) == 20
    return counts["draws"], counts["steps"], shown.getvalue()


def test_the_bar_is_drawn_per_step_at_a_terminal_and_only_at_the_ends_elsewhere(
    tmp_path: Path,
    redis_url: str,
    write_config: Callable[[dict[str, object]], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a batch that takes several follow steps (20 calls of 100 ms, two at a time),
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 100}}})
    # when it runs with stderr not a terminal, the bar is drawn when it starts and ends only
    # (nothing of it shows in between), not on every step nor by a refresh thread;
    draws, steps, shown = _run(tmp_path, redis_url, config, monkeypatch, terminal=False)
    assert steps >= 5
    assert draws <= 4
    assert "20/20" in shown
    # and at a terminal, it is drawn on every step, so the numbers move as results arrive.
    draws, steps, shown = _run(tmp_path, redis_url, config, monkeypatch, terminal=True)
    assert steps >= 5
    assert draws >= steps
    assert "20/20" in shown
