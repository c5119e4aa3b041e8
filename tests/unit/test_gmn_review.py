"""The gmn reviewer finalizes or refines; producers turn its records into lines and reports."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from producers.gmn import GMNChunkBuilder, GMNOutcome, outcome
from producers.gmn_cli import GMNReport
from producers.submit import numbered
from providers.mock_gmn import build_document, corrupt
from schemas.config import parse_config
from schemas.gmn.prompts import GMNConstraints, RoundVerdict, first_request, parse_prompt_line
from schemas.job import Job, Task
from schemas.request import RouteHop
from schemas.result import ErrorInfo, LLMResult, Usage
from workers.execute import Executor
from workers.gmn_review import review
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.keys import Keys
from workers.tasks import reviewer

PROMPT = "An explorer walks a 2x2 grid towards the goal."
CONFIG = parse_config({"endpoints": {"mock": {"provider": "mock"}}})


def valid_text() -> str:
    doc = build_document(PROMPT, "explorer", GMNConstraints(), random.Random(0))
    return orjson.dumps(doc).decode()


def broken_text(kind: str = "unnormalized_likelihood") -> str:
    doc = build_document(PROMPT, "explorer", GMNConstraints(), random.Random(0))
    return corrupt(doc, kind, random.Random(0))


def job(max_rounds: int = 3, **data: Any) -> Job:
    spec = parse_prompt_line({"custom_id": "g-1", "prompt": PROMPT, "agent_type": "explorer"}, 1)
    return Job(
        batch_id="batch_x",
        key="g-1",
        request=first_request(spec),
        route=[RouteHop(endpoint="mock")],
        enqueued_at=0.0,
        task=Task(kind="gmn", max_rounds=max_rounds, data={"agent_type": "explorer", **data}),
    )


def answer(text: str, tokens: tuple[int, int] = (100, 50), cost: float | None = None) -> LLMResult:
    return LLMResult(
        custom_id="g-1",
        batch_id="batch_x",
        status="succeeded",
        output=text,
        endpoint="mock",
        model="mock-1",
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        cost_usd=cost,
    )


def test_the_reviewer_is_found_through_the_entry_point_group() -> None:
    assert reviewer("gmn") is review


def test_a_valid_first_answer_is_final() -> None:
    result = review(job(), answer(valid_text())).result
    assert result is not None and result.status == "succeeded"
    record = result.extra["gmn"]
    assert record["valid"] is True and record["errors"] == []
    assert record["rounds"] == 1 and record["agent_type"] == "explorer"
    assert record["document"]["nodes"][0]["type"] == "state"
    assert record["tokens"] == {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}
    assert record["history"] == [{"round": 1, "valid": True, "codes": [], "strategy": "first"}]


def test_an_invalid_answer_becomes_the_next_round_with_the_errors() -> None:
    # Given round 1 of 3 answered with a likelihood column that does not sum to 1,
    first = job()
    review_ = review(first, answer(broken_text(), cost=0.01))
    # then there is no result yet, but a refinement request carrying the errors,
    assert review_.result is None and review_.next_request is not None
    messages = review_.next_request.messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content == broken_text()
    assert (
        "GMN046 at $.nodes[3].properties.matrix (node seen_position_model)" in messages[3].content
    )
    # and the next job (as the executor builds it) carries usage, cost and history.
    second = Executor._next_round(first, review_.next_request)
    assert second.task is not None and second.task.round == 2
    [first_round] = second.task.data["history"]
    assert {k: first_round[k] for k in ("round", "valid", "codes", "strategy")} == {
        "round": 1, "valid": False, "codes": ["GMN046"], "strategy": "first"
    }  # fmt: skip
    assert first_round["usage"] == {"input_tokens": 100, "output_tokens": 50}
    assert second.task.data["strategy"] == "refine"
    # When round 2 is valid, the final result covers both rounds.
    result = review(second, answer(valid_text(), tokens=(300, 60), cost=0.02)).result
    assert result is not None
    record = result.extra["gmn"]
    assert (record["valid"], record["rounds"]) == (True, 2)
    assert record["tokens"] == {"input_tokens": 400, "output_tokens": 110, "total_tokens": 510}
    assert record["cost_usd"] == pytest.approx(0.03)
    assert [h["valid"] for h in record["history"]] == [False, True]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (400, 110)
    assert result.cost_usd == pytest.approx(0.03)


def test_an_invalid_last_round_is_final_and_still_a_successful_call() -> None:
    result = review(job(max_rounds=1), answer("I would rather describe it in words.")).result
    assert result is not None and result.status == "succeeded" and result.error is None
    record = result.extra["gmn"]
    assert record["valid"] is False and record["document"] is None and record["rounds"] == 1
    assert [e["code"] for e in record["errors"]] == ["GMN081"], "prose is not a text form"
    assert set(record["errors"][0]) == {"code", "path", "node", "message"}


def test_a_broken_constraint_is_refined_like_any_rule() -> None:
    review_ = review(job(constraints={"max_states": 2}), answer(valid_text()))
    assert review_.next_request is not None
    ask = review_.next_request.messages[-1].content
    assert "GMN090 at $.nodes[0].properties.num_states (node position)" in ask


def test_unreadable_task_data_is_an_error_result() -> None:
    result = review(job(agent_type="pirate"), answer(valid_text())).result
    assert result is not None and result.status == "errored"
    assert result.error is not None and result.error.code == "invalid_task"


def test_builder_rejects_bad_lines_and_gives_each_good_line_its_own_task() -> None:
    rows: list[Any] = [
        {"custom_id": "a", "prompt": PROMPT, "agent_type": "trader"},
        {"custom_id": "b", "prompt": "", "agent_type": "coordinator"},
        b"",  # blank lines are skipped, but still counted
        {"custom_id": "c", "prompt": PROMPT, "constraints": {"max_nodes": 9}},
    ]
    builder = GMNChunkBuilder("batch_x", Keys(), CONFIG, rounds=4, options={"json_mode": True})
    chunk = builder.build(list(numbered(rows)))
    assert chunk.enqueued_ids == ["a", "c"] and chunk.enqueued_lines == [1, 4]
    [(key, error)] = chunk.errors
    assert key == "#line:2" and error.error is not None
    assert error.error.message == "line 2: prompt: must not be empty"
    bad = outcome(error)
    assert (bad.custom_id, bad.agent_type, bad.line, bad.valid) == ("b", "coordinator", 2, False)
    assert [(e.code, e.path) for e in bad.errors] == [("invalid_line", "prompt")]
    fields = chunk.blob.fields()
    jobs = [Job.model_validate(orjson.loads(fields[i + 3])["args"][0]) for i in (0, 4)]
    tasks = [j.task for j in jobs if j.task is not None]
    # GMN prompts are structured requests whose validator is gmn (one refine mechanism).
    assert [(t.kind, t.round, t.max_rounds) for t in tasks] == [("structured", 1, 4)] * 2
    assert tasks[0].data == {
        "validator": "gmn",
        "options": {
            "agent_type": "trader",
            "examples": ["explorer"],
            "stated": [{"kind": "state", "least": 4, "most": 4, "words": "2x2 grid"}],
        },
        "prompt_chars": len(PROMPT),
    }
    assert tasks[1].data["options"] == {
        "constraints": {"max_nodes": 9},
        "examples": ["explorer"],
        "stated": [{"kind": "state", "least": 4, "most": 4, "words": "2x2 grid"}],
    }
    assert jobs[0].request.response_format == {"type": "json_object"}


def test_a_failed_call_keeps_round_and_agent_type_from_its_dead_letter() -> None:
    failing = job(usage={"input_tokens": 10, "output_tokens": 5}, history=[])
    assert failing.task is not None
    failing.task.round = 2
    result = answer("")
    result.status, result.output = "errored", None
    result.error = ErrorInfo(code="server_error", message="mock: injected server_error")
    line = outcome(result, DeadLetter.of(failing, "errored", "server_error"))
    assert (line.valid, line.rounds, line.agent_type, line.status) == (
        False,
        2,
        "explorer",
        "errored",
    )
    assert [e.code for e in line.errors] == ["server_error"]
    assert line.tokens["total_tokens"] == 15
    assert outcome(result).agent_type is None  # cancelled/expired calls have no dead letter


def verdicts(*rounds: tuple[bool, list[str]]) -> list[RoundVerdict]:
    return [RoundVerdict(round=i, valid=v, codes=c) for i, (v, c) in enumerate(rounds, 1)]


def test_report_counts_validity_per_agent_type_and_round_and_rule_violations() -> None:
    rows = [
        GMNOutcome(custom_id="1", agent_type="explorer", valid=True, rounds=1,
                   history=verdicts((True, []))),
        GMNOutcome(custom_id="2", agent_type="explorer", valid=True, rounds=2,
                   history=verdicts((False, ["GMN046", "GMN050"]), (True, []))),
        GMNOutcome(custom_id="3", agent_type="trader", valid=False, rounds=3,
                   errors=[{"code": "GMN046", "path": "$", "message": "m"}],
                   history=verdicts((False, ["GMN046"]), (False, ["GMN046"]), (False, ["GMN046"]))),
        GMNOutcome(custom_id="4", agent_type="trader", status="errored", line=9,
                   errors=[{"code": "invalid_line", "path": "prompt", "message": "m"}], rounds=0),
    ]  # fmt: skip
    report = GMNReport()
    for row in rows:
        report.add(row)
    data = report.to_dict()
    assert (data["prompts"], data["sent"], data["rejected"], data["valid"]) == (4, 3, 1, 2)
    assert data["validity"] == round(2 / 3, 4)
    assert data["by_agent_type"]["explorer"]["validity"] == 1.0
    assert data["by_agent_type"]["trader"] == {
        "prompts": 2, "rejected": 1, "valid": 0, "validity": 0.0
    }  # fmt: skip
    assert data["by_round"] == [
        {"round": 1, "answers": 3, "valid_answers": 1, "answer_validity": 0.3333,
         "valid_after_round": 0.3333, "distinct_valid_after_round": 0.0},
        {"round": 2, "answers": 2, "valid_answers": 1, "answer_validity": 0.5,
         "valid_after_round": 0.6667, "distinct_valid_after_round": 0.0},
        {"round": 3, "answers": 1, "valid_answers": 0, "answer_validity": 0.0,
         "valid_after_round": 0.6667, "distinct_valid_after_round": 0.0},
    ]  # fmt: skip
    assert data["violations_all_rounds"] == {"GMN046": 4, "GMN050": 1}
    assert data["violations_final"] == {"GMN046": 1}


def test_best_of_k_draws_keep_the_answer_with_fewest_errors_and_refine_that_one() -> None:
    # Given best-of-3 on an endpoint without n: a one-error answer, then prose, then another,
    first = job(candidates=3)
    assert first.task is not None
    first.task.data = {"validator": "gmn", "options": {"agent_type": "explorer"}, "candidates": 3}
    first.task.kind = "structured"
    one_error = broken_text()
    step = review(first, answer(one_error))
    assert step.next_request is not None and step.same_round
    second = Executor._next_round(first, step.next_request, same=True)
    assert second.task is not None and second.task.round == 1
    step = review(second, answer("I would rather describe it in words."))
    third = Executor._next_round(second, step.next_request, same=True)  # type: ignore[arg-type]
    step = review(third, answer("Still prose."))
    # then round 2 refines the one-error answer, and round 1's record counts three draws.
    assert step.next_request is not None and not step.same_round
    messages = step.next_request.messages
    assert messages[2].content == one_error and "GMN046" in messages[3].content
    nxt = Executor._next_round(third, step.next_request)
    assert nxt.task is not None and nxt.task.round == 2
    [record] = nxt.task.data["history"]
    assert (record["candidates"], record["codes"], record["answer"]) == (3, ["GMN046"], one_error)
    assert record["usage"] == {"input_tokens": 300, "output_tokens": 150}
