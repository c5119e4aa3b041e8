"""GMN against scripted weak models over real HTTP (#23): a model that copies the prompt's
example and a model whose answers are cut off by max_tokens. Real Redis, a real worker
process, the fake OpenAI server; the report's figures and the refine bodies on the wire are
asserted exactly."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers import gmn
from producers.client import Client
from producers.gmn_cli import GMNReport
from providers.fake_server import Call, FakeServer, Fault
from providers.mock_gmn import build_document
from schemas.gmn.context import prompt_tokens
from schemas.gmn.examples import EXPLORER
from schemas.gmn.prompts import GMNConstraints
from schemas.gmn.rounds import FRESH_HEAD
from tests.conftest import WorkerPool, batchyard, cli_env

pytestmark = pytest.mark.integration

_NUMBER = re.compile(r"number (\d+)")
_GRID = re.compile(r"\d+x\d+ grid")
_EXAMPLE = re.compile(r"^Example \([a-z ]+\):\n(\{.*\})$", re.M)


def prompt_of(call: Call) -> str:
    return next(text for role, text in call.messages if role == "user")


def own_document(prompt: str) -> str:
    """A valid answer of the model's own, sized by the grid the prompt names."""
    grid = _GRID.search(prompt)
    assert grid is not None
    doc = build_document(f"walks a {grid.group()}", "explorer", GMNConstraints(), random.Random(0))
    return orjson.dumps(doc).decode()


def renamed_copy(example: str) -> str:
    doc = orjson.loads(example)
    for node in doc["nodes"]:
        node["id"] = "my_" + node["id"]
    for edge in doc["edges"]:
        edge["source"], edge["target"] = "my_" + edge["source"], "my_" + edge["target"]
    doc["name"] = "my_trader"
    return orjson.dumps(doc).decode()


class CopyingModel:
    """Round 1: the example from the system prompt, verbatim. Then per prompt number:
    0-3 keep copying; 4-6 rename its ids in round 2 and answer on their own in round 3;
    7-9 answer on their own in round 2 (8 and 9 with the same structure)."""

    def __init__(self) -> None:
        self.rounds: Counter[int] = Counter()

    def __call__(self, call: Call) -> str:
        prompt = prompt_of(call)
        match = _NUMBER.search(prompt)
        assert match is not None
        n = int(match.group(1))
        self.rounds[n] += 1
        round_ = self.rounds[n]
        system = next(text for role, text in call.messages if role == "system")
        example = _EXAMPLE.search(system)
        assert example is not None, "the system prompt shows a complete example"
        if round_ == 1 or n <= 3:
            return example.group(1)
        if n <= 6:
            return renamed_copy(example.group(1)) if round_ == 2 else own_document(prompt)
        return own_document(prompt)


COPY_GRIDS = ["2x2"] * 4 + ["2x2", "2x3", "2x4", "3x3", "1x7", "1x7"]


def truncating_model(call: Call) -> Fault:
    """Writes its own document; whatever passes max_tokens (4 characters a token) is cut."""
    text = own_document(prompt_of(call))
    limit = (call.max_tokens or 100_000) * 4
    if len(text) <= limit:
        return Fault(text=text)
    return Fault(text=text[:limit], finish_reason="length", output_tokens=call.max_tokens)


CUT_GRIDS = ["2x2", "2x3", "2x3", "3x3"]


def config(server: FakeServer, context_tokens: int) -> dict[str, Any]:
    return {
        "endpoints": {
            "tiny": {
                "provider": "openai",
                "base_url": server.openai_url,
                "model": "tiny-0.5b",
                "max_context_tokens": context_tokens,
            }
        },
        "routes": {"default": ["tiny"]},
    }


def run(
    client: Client, lines: list[dict[str, Any]], timeout_s: float, **opts: Any
) -> tuple[GMNReport, list[gmn.GMNOutcome]]:
    batch_id = client.generate_gmn_batch(lines, rounds=3, **opts)
    deadline = time.monotonic() + timeout_s
    report = GMNReport()
    rows: list[gmn.GMNOutcome] = []
    for _done, _total, items in client.follow_gmn(batch_id):
        rows += items
        assert time.monotonic() < deadline, f"batch {batch_id} not finished in {timeout_s}s"
    assert len(rows) == len(lines)
    for row in rows:
        report.add(row)
    return report, rows


def bodies(server: FakeServer, custom_id: str) -> list[dict[str, Any]]:
    found = [r.body for r in server.calls(custom_id=custom_id)]
    assert all(isinstance(b, dict) for b in found)
    return found


def roles(body: dict[str, Any]) -> list[str]:
    return [m["role"] for m in body["messages"]]


def test_a_copying_model_gets_no_credit_for_copies(
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # Given a model that copies the example in its instructions (see CopyingModel),
    server = fake_server(responder=CopyingModel(), record_bodies=True)
    run_workers(config(server, 8192), concurrency=8)
    lines = [
        {
            "custom_id": f"c-{n}",
            "prompt": f"Trader number {n} watches a {grid} grid of price levels and trades.",
            "agent_type": "trader",
        }
        for n, grid in enumerate(COPY_GRIDS)
    ]
    with Client(redis_url) as client:
        report, rows = run(client, lines, timeout_s=60)
    data = report.to_dict()
    # then copies never count as valid; distinct-valid counts each structure once,
    assert (data["valid"], data["distinct_valid"], data["copies"]) == (6, 5, 4)
    assert data["valid_if_copies_counted"] == 10
    assert [r["valid_after_round"] for r in data["by_round"]] == [0.0, 0.3, 0.6]
    assert [r["distinct_valid_after_round"] for r in data["by_round"]] == [0.0, 0.2, 0.5]
    assert data["violations_final"] == {"GMN091": 4}
    # and repeating the copy switched strategy: a fresh attempt fixed 3 of 7.
    assert data["by_strategy"] == {
        "first": {"rounds": 10, "fixed": 0, "fix_rate": 0.0},
        "refine": {"rounds": 10, "fixed": 3, "fix_rate": 0.3},
        "fresh": {"rounds": 7, "fixed": 3, "fix_rate": 0.4286},
    }
    # On the wire: round 2 carries the copy and names the fault,
    first, second, third = bodies(server, "c-0")
    assert first["messages"][1]["content"] == lines[0]["prompt"]
    assert f"Example (an explorer):\n{EXPLORER}" in first["messages"][0]["content"]
    assert roles(second) == ["system", "user", "assistant", "user"]
    assert second["messages"][2]["content"] == EXPLORER
    feedback = second["messages"][3]["content"]
    assert feedback.startswith(
        "Your GMN document is not valid. Fix these problems, the most basic first:\n"
        "GMN091: the answer models this prompt's agent; it is not the example from the "
        "instructions\n- GMN091 at $: the document is the example 'grid_explorer_2x2' from the "
        "instructions, copied; model the agent the prompt describes instead\n"
    )
    # and round 3, after the same code twice, starts afresh without the copy in context.
    assert roles(third) == ["system", "user"]
    assert third["messages"][1]["content"] == (
        f"{lines[0]['prompt']}\n\n{FRESH_HEAD} Make sure yours follows these rules:\n"
        "- GMN091: the answer models this prompt's agent; it is not the example from the "
        "instructions\n  (the rejected answer: the document is the example "
        "'grid_explorer_2x2' from the instructions, copied; model the agent the prompt "
        "describes instead)\nAnswer with exactly one JSON object that follows these rules. "
        "No prose, no comments, no markdown fences."
    )
    assert third["temperature"] == first["temperature"]
    # A renamed copy counts as the same copy: c-4's round 3 is fresh too, and fixes it.
    c4 = next(r for r in rows if r.custom_id == "c-4")
    assert [(h.codes, h.strategy) for h in c4.history] == [
        (["GMN091"], "first"),
        (["GMN091"], "refine"),
        ([], "fresh"),
    ]
    assert roles(bodies(server, "c-4")[2]) == ["system", "user"]
    # `gmn report` reads the same figures from the output file.
    out = tmp_path / "gmn.jsonl"
    out.write_bytes(b"".join(gmn.outcome_line(r) for r in rows))
    printed = orjson.loads(
        batchyard("gmn", "report", str(out), "--json", env=cli_env(), cwd=tmp_path)
    )
    assert (printed["valid"], printed["distinct_valid"], printed["copies"]) == (6, 5, 4)
    text = batchyard("gmn", "report", str(out), env=cli_env(), cwd=tmp_path)
    assert "6 valid (60.0% of sent), 5 distinct valid, 4 copies of the example" in text
    assert "by strategy" in text


def test_a_truncating_model_is_told_it_was_cut_off_and_gets_more_room(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given a 2,048-token endpoint and a model whose answers pass a 300-token budget,
    server = fake_server(responder=truncating_model, record_bodies=True)
    run_workers(config(server, 2048), concurrency=8)
    lines = [
        {
            "custom_id": f"t-{n}",
            "prompt": f"Explorer number {n} walks a {grid} grid looking for food.",
            "agent_type": "explorer",
        }
        for n, grid in enumerate(CUT_GRIDS)
    ]
    with Client(redis_url) as client:
        report, rows = run(client, lines, timeout_s=60, max_tokens=300)
    data = report.to_dict()
    # then every first answer is GMN080 (never GMN010 about a fragment),
    assert data["violations_all_rounds"] == {"GMN080": 6}
    assert data["by_round"][0]["valid_answers"] == 0
    # twice the budget fixes the three that fit in it (two of them the same structure),
    assert (data["valid"], data["distinct_valid"], data["copies"]) == (3, 2, 0)
    assert data["by_strategy"]["more_tokens"] == {"rounds": 4, "fixed": 3, "fix_rate": 0.75}
    assert data["by_strategy"]["fresh"] == {"rounds": 1, "fixed": 0, "fix_rate": 0.0}
    by_id = {r.custom_id: r for r in rows}
    assert [e.code for e in by_id["t-3"].errors] == ["GMN080"]
    # On the wire: round 1 fits the context, round 2 is a fresh attempt told about the cut
    # with twice the budget, still inside 2,048 tokens.
    first, second, third = bodies(server, "t-3")
    assert first["max_tokens"] == 300 and second["max_tokens"] == 600
    assert roles(second) == ["system", "user"]
    note = second["messages"][1]["content"]
    assert note.startswith(
        lines[3]["prompt"] + "\n\nYour previous answer was cut off at the "
        "answer limit of 300 tokens before the JSON object was complete"
    )
    assert "GMN010" not in note and "GMN0" not in note
    # After a second cut-off, round 3 changes strategy again: a fresh attempt naming the rule.
    assert "- GMN080: the answer must be complete" in third["messages"][1]["content"]
    for body in (first, second, third):
        turns = [(m["role"], m["content"]) for m in body["messages"]]
        assert prompt_tokens(turns) + body["max_tokens"] <= 2048
