"""Bulk GMN generation with real worker processes and Redis: refine rounds as queued jobs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers import gmn
from producers.client import AsyncClient, Client
from producers.gmn_cli import GMNReport
from tests.conftest import WorkerPool, batchyard, cli_env, read_jsonl

pytestmark = pytest.mark.integration

#: A copy of the brief's gmn/ (SPEC.md, examples, prompts), so every clone runs these tests.
GMN_DATA = Path(__file__).resolve().parents[1] / "data" / "gmn"
AGENTS = ["explorer", "trader", "coordinator", "general"]


@pytest.fixture
def gmn_workers(
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., WorkerPool]]:
    """One worker process whose mock answers in GMN mode with the given options."""

    def start(concurrency: int = 32, **mock: Any) -> WorkerPool:
        path = write_config({"endpoints": {"mock": {"provider": "mock", "mode": "gmn", **mock}}})
        monkeypatch.setenv("BATCHYARD_CONFIG", str(path))
        env = cli_env(redis_url, BATCHYARD_CONFIG=str(path), BATCHYARD_LOG_LEVEL="WARNING")
        return worker_pool(env, "-p", "1", "--concurrency", str(concurrency))

    yield start


def prompt_lines(n: int) -> list[dict[str, Any]]:
    lines = []
    for i in range(n):
        line: dict[str, Any] = {
            "custom_id": f"p-{i}",
            "prompt": f"Agent number {i} explores a {2 + i % 4}x{2 + i % 3} grid for a reward.",
            "agent_type": AGENTS[i % 4],
        }
        if i % 5 == 0:
            line["constraints"] = {"max_states": 6, "require_preferences": True}
        lines.append(line)
    return lines


def finish(client: Client, batch_id: str, timeout_s: float) -> list[gmn.GMNOutcome]:
    deadline = time.monotonic() + timeout_s
    out: list[gmn.GMNOutcome] = []
    for _done, _total, items in client.follow_gmn(batch_id):
        out += items
        assert time.monotonic() < deadline, f"batch {batch_id} not finished in {timeout_s}s"
    return out


def test_forty_percent_invalid_first_answers_converge_within_three_rounds(
    redis_url: str, gmn_workers: Callable[..., WorkerPool]
) -> None:
    # Given a mock that breaks 40% of first answers in assorted ways,
    gmn_workers(gmn_invalid_rate=0.4, seed=7)
    with Client(redis_url) as client:
        # when 1,000 prompts run with up to 3 rounds (how fast: bench/gmn.py),
        batch_id = client.generate_gmn_batch(prompt_lines(1000), rounds=3)
        rows = finish(client, batch_id, timeout_s=55)
        batch = client.batch(batch_id)
    # then at least 99% end valid, each prompt has exactly one line,
    assert sorted(r.custom_id or "" for r in rows) == sorted(f"p-{i}" for i in range(1000))
    assert batch.counts.completed == 1000 and batch.counts.failed == 0
    assert sum(r.valid for r in rows) >= 990
    assert all(r.rounds is not None and 1 <= r.rounds <= 3 for r in rows)
    # and the report shows about 60% valid after round 1, the rest fixed in round 2.
    report = GMNReport()
    for row in rows:
        report.add(row)
    data = report.to_dict(top=50)
    first, second = data["by_round"][:2]
    assert 0.52 < first["answer_validity"] < 0.68
    assert first["answers"] == 1000 and second["answers"] == 1000 - first["valid_answers"]
    assert second["valid_after_round"] >= 0.99
    assert data["validity"] >= 0.99
    assert set(data["by_agent_type"]) == set(AGENTS)
    assert {"GMN046", "GMN050", "GMN053", "GMN001"} <= set(data["violations_all_rounds"])
    # Tokens are summed over rounds: a refined prompt costs more than the same kind of
    # prompt answered at once (compared per kind: the grid a prompt states sizes its
    # document, so documents differ in size across kinds).
    kinds: dict[tuple[Any, ...], dict[int, list[int]]] = {}
    for r in rows:
        i = int((r.custom_id or "p-0")[2:])
        kind = kinds.setdefault((i % 4, i % 3, i % 5 == 0), {1: [], 2: []})
        if r.rounds in (1, 2):
            kind[r.rounds].append(r.tokens["total_tokens"])
    ratios = sorted(
        (sum(k[2]) / len(k[2])) / (sum(k[1]) / len(k[1])) for k in kinds.values() if k[1] and k[2]
    )
    assert ratios and ratios[len(ratios) // 2] > 1.5, "tokens are summed over rounds"
    assert all(r.document is not None for r in rows if r.valid)


def test_last_rounds_failed_calls_and_rejected_lines_each_get_one_line(
    redis_url: str, gmn_workers: Callable[..., WorkerPool]
) -> None:
    script = {"fail-first": ["invalid_request"], "fail-second": ["ok", "invalid_request"]}
    gmn_workers(gmn_invalid_rate=1.0, gmn_invalid_kinds=["dangling_edge"], script=script)
    good = "A trader watches prices and decides to buy or sell."
    lines: list[Any] = [
        {"custom_id": "fixed", "prompt": good, "agent_type": "trader"},
        {"custom_id": "fail-first", "prompt": good, "agent_type": "trader"},
        {"custom_id": "fail-second", "prompt": good, "agent_type": "coordinator"},
        {"custom_id": "too-short", "prompt": "go", "agent_type": "explorer"},
        b"not json",
    ]
    with Client(redis_url) as client:
        rows = {r.custom_id: r for r in finish(client, client.generate_gmn_batch(lines), 30)}
        last = finish(client, client.generate_gmn_batch(lines[:1], rounds=1), 30)
    # A broken first answer is fixed in round 2.
    fixed = rows["fixed"]
    assert (fixed.valid, fixed.rounds, fixed.status) == (True, 2, "succeeded")
    assert "GMN050" in fixed.history[0].codes and fixed.history[1].codes == []
    # A call that fails ends the prompt, with its agent type and round.
    first = rows["fail-first"]
    assert (first.valid, first.status, first.rounds, first.agent_type) == (
        False, "errored", 1, "trader"
    )  # fmt: skip
    assert [e.code for e in first.errors] == ["invalid_request"]
    second = rows["fail-second"]
    assert (second.rounds, second.agent_type, len(second.history)) == (2, "coordinator", 1)
    assert second.tokens["total_tokens"] > 0, "round 1 tokens are kept"
    # Rejected lines name line and field and were never sent.
    short = rows["too-short"]
    assert (short.line, short.agent_type, short.rounds) == (4, "explorer", 0)
    assert short.errors[0].message == "line 4: prompt: must have at least 3 words (got 1)"
    assert rows[None].errors[0].message.startswith("line 5: not valid JSON")
    # With no rounds left, an invalid answer is final: a successful call, an invalid document.
    [only] = last
    assert (only.valid, only.status, only.rounds) == (False, "succeeded", 1)
    assert only.document is not None and only.errors[0].code == "GMN050"


def test_single_prompt_api_sync_and_async(
    redis_url: str, gmn_workers: Callable[..., WorkerPool]
) -> None:
    gmn_workers(gmn_invalid_rate=0.5, seed=3)
    with Client(redis_url) as client:
        made = client.generate_gmn(
            "A thermostat senses cold or hot rooms and heats or cools.",
            agent_type="general",
            constraints={"max_states": 3},
            rounds=3,
            timeout_s=30,
        )
        assert made.valid and made.document is not None and 1 <= (made.rounds or 0) <= 2
        assert client.validate_gmn(made.document, {"max_states": 3}).valid
        # refine_gmn repairs a broken document; errors are found locally when not given.
        broken = dict(made.document, edges=[*made.document["edges"], {"source": "x",
                      "target": "y", "type": "influences"}])  # fmt: skip
        assert not client.validate_gmn(broken).valid
        repaired = client.refine_gmn(broken, prompt="Repair this thermostat.", timeout_s=30)
        assert repaired.valid and repaired.rounds == 1
        untouched = client.refine_gmn(made.document)
        assert (untouched.valid, untouched.rounds) == (True, 0), "nothing to fix, nothing sent"
        with pytest.raises(ValueError, match="prompt: must have at least 3 words"):
            client.generate_gmn("thermostat")

    async def run() -> gmn.GMNOutcome:
        async with AsyncClient(redis_url) as aclient:
            batch_id = await aclient.generate_gmn_batch(prompt_lines(3))
            assert batch_id.startswith("batch_")
            return await aclient.generate_gmn(
                "A trader holds cash or stock and prefers profit.",
                agent_type="trader",
                timeout_s=30,
            )

    outcome = asyncio.run(run())
    assert outcome.valid and outcome.agent_type == "trader"


def test_cli_generates_the_spec_prompts_on_embedded_defaults(tmp_path: Path) -> None:
    # Given no REDIS_URL and no config file, when the spec's prompts go through the CLI,
    prompts = GMN_DATA / "prompts.jsonl"
    env = cli_env()
    stdout = batchyard(
        "gmn", "generate", str(prompts), "-o", "gmn.jsonl", "--rounds", "3", env=env, cwd=tmp_path
    )
    # then every prompt has one line: the good ones valid, the bad ones rejected by line.
    inputs = read_jsonl(prompts)
    rows = {r["custom_id"]: r for r in read_jsonl(tmp_path / "gmn.jsonl")}
    assert set(rows) == {r["custom_id"] for r in inputs}
    bad = {"edge-empty", "edge-whitespace", "edge-one-word"}
    assert all(rows[c]["valid"] for c in set(rows) - bad)
    for cid in bad:
        assert rows[cid]["valid"] is False and rows[cid]["rounds"] == 0
        assert rows[cid]["errors"][0]["path"] == "prompt"
        assert rows[cid]["errors"][0]["message"].startswith(f"line {rows[cid]['line']}: prompt:")
    first = next(iter(rows.values()))
    assert list(first)[:9] == [
        "custom_id", "agent_type", "document", "valid", "errors", "rounds", "endpoint", "tokens",
        "cost",
    ]  # fmt: skip
    assert f"{len(inputs) - 3} of {len(inputs)} prompts valid" in stdout
    assert "0 copies of the example" in stdout, "the mock writes its own documents"
    # The report shows validity per round and agent type,
    report = orjson.loads(batchyard("gmn", "report", "gmn.jsonl", "--json", env=env, cwd=tmp_path))
    assert report["rejected"] == 3 and report["validity"] == 1.0
    assert report["copies"] == 0 and 1 < report["distinct_valid"] <= len(inputs) - 3
    assert report["by_round"][0]["round"] == 1
    assert report["by_round"][-1]["valid_after_round"] == 1.0
    assert "by round" in batchyard("gmn", "report", "gmn.jsonl", env=env, cwd=tmp_path)
    # and the documents pass `gmn validate` while a broken one fails it with exit code 1.
    valid_doc = tmp_path / "doc.json"
    valid_doc.write_bytes(orjson.dumps(rows["explore-grid-treasure"]["document"]))
    assert "valid" in batchyard("gmn", "validate", str(valid_doc), env=env, cwd=tmp_path)
    broken = dict(rows["trade-regime"]["document"], edges=[])
    (tmp_path / "broken.json").write_bytes(orjson.dumps(broken))
    proc = subprocess.run(
        [sys.executable, "-m", "batchyard", "gmn", "validate", "doc.json", "broken.json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "broken.json: invalid" in proc.stdout and "GMN054" in proc.stdout
