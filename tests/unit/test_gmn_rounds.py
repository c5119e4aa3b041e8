"""Rounds that change something (#23): the reviewer switches strategy on repeated codes, answers
a cut-off reply with more room, and keeps every round inside the endpoint's context."""

from __future__ import annotations

import random
from typing import Any

import orjson

from providers.mock_gmn import build_document
from schemas.gmn.context import MESSAGE_OVERHEAD, fit_round, prompt_tokens, room
from schemas.gmn.examples import EXPLORER
from schemas.gmn.prompts import GMNConstraints, RoundVerdict, parse_prompt_line
from schemas.gmn.rounds import FRESH_HEAD, base_turns, first_round, is_follow_up
from schemas.gmn.strategy import next_strategy
from schemas.job import Job, Task
from schemas.request import LLMRequest, RouteHop
from schemas.result import LLMResult, Usage
from workers.execute import Executor
from workers.gmn_review import review

PROMPT = "A trader watches prices and decides each step to buy, sell or hold for profit."
LINE = {"custom_id": "t-1", "prompt": PROMPT, "agent_type": "trader"}


def start(
    max_rounds: int = 3,
    *,
    endpoints: int = 1,
    max_tokens: int | None = None,
    context_tokens: int | None = None,
) -> Job:
    """Round 1 of a trader prompt, as the producer queues it."""
    spec = parse_prompt_line(LINE, 1)
    request, data = first_round(spec, max_tokens=max_tokens, context_tokens=context_tokens)
    return Job(
        batch_id="batch_x",
        key="t-1",
        request=request,
        route=[RouteHop(endpoint=f"ep{i}") for i in range(endpoints)],
        enqueued_at=0.0,
        task=Task(kind="gmn", max_rounds=max_rounds, data=data.model_dump(exclude_defaults=True)),
    )


def answer(text: str, finish_reason: str = "stop", output_tokens: int = 50) -> LLMResult:
    return LLMResult(
        custom_id="t-1",
        batch_id="batch_x",
        status="succeeded",
        output=text,
        finish_reason=finish_reason,
        endpoint="ep0",
        usage=Usage(input_tokens=500, output_tokens=output_tokens),
    )


def step(job: Job, reply: LLMResult) -> tuple[Job | None, LLMResult | None]:
    """One review: the next round's job (as the executor builds it), or the final result."""
    verdict = review(job, reply)
    if verdict.next_request is None:
        return None, verdict.result
    return Executor._next_round(job, verdict.next_request, verdict.rotate_route), None


def roles(request: LLMRequest) -> list[str]:
    return [m.role for m in request.messages]


def trader_text() -> str:
    doc = build_document(PROMPT, "trader", GMNConstraints(), random.Random(1))
    return orjson.dumps(doc).decode()


def broken_trader() -> str:
    doc = orjson.loads(trader_text())
    doc["edges"][0]["type"] = "generates"  # state -> likelihood may only be depends_on
    return orjson.dumps(doc).decode()


def test_a_round_repeating_the_previous_codes_switches_strategy() -> None:
    # Given a model that answers with the same broken document round after round,
    job: Job | None = start(max_rounds=5, endpoints=2)
    seen: list[tuple[str, list[str], float | None, str]] = []
    for _ in range(4):
        assert job is not None and job.task is not None
        job, _ = step(job, answer(broken_trader()))
        assert job is not None and job.task is not None
        data = job.task.data
        seen.append(
            (
                data["strategy"],
                roles(job.request),
                job.request.body.get("temperature"),
                job.current.endpoint,
            )
        )
    # then round 2 refines it; once round 2 repeats round 1's codes the strategy changes:
    # a fresh attempt without the failed answer, then a hotter one, then the other endpoint.
    assert [s[0] for s in seen] == ["refine", "fresh", "hotter", "other_endpoint"]
    assert seen[0][1] == ["system", "user", "assistant", "user"]
    assert seen[1][1] == ["system", "user"], "the failed answer is not in a fresh round"
    assert seen[2][2] is not None and seen[1][2] is not None and seen[2][2] > seen[1][2]
    assert [s[3] for s in seen] == ["ep0", "ep0", "ep0", "ep1"]
    assert job is not None and job.task is not None
    history = job.task.data["history"]
    assert [h["strategy"] for h in history] == ["first", "refine", "fresh", "hotter"]
    assert all(h["codes"] == history[0]["codes"] for h in history)


def test_a_fresh_round_names_the_broken_rules_and_keeps_the_users_prompt_whole() -> None:
    job = start()
    job, _ = step(job, answer(broken_trader()))
    assert job is not None
    job, _ = step(job, answer(broken_trader()))
    assert job is not None and job.task is not None and job.task.data["strategy"] == "fresh"
    user = job.request.messages[-1].content
    assert user.startswith(PROMPT + "\n\n" + FRESH_HEAD)
    assert "- GMN052: an edge type must be allowed between its node types" in user
    assert is_follow_up([(m.role, m.content) for m in job.request.messages])
    # A later round starts from the user's own prompt, not from the note.
    turns = [(m.role, m.content) for m in job.request.messages]
    assert base_turns(turns, job.task.data["prompt_chars"])[-1] == ("user", PROMPT)


def test_different_codes_keep_refining_and_a_valid_answer_ends_the_rounds() -> None:
    job: Job | None = start()
    assert job is not None
    job, _ = step(job, answer(broken_trader()))
    other = orjson.loads(trader_text())
    other["nodes"][0]["properties"]["num_states"] = 0
    assert job is not None
    job, _ = step(job, answer(orjson.dumps(other).decode()))
    assert job is not None and job.task is not None and job.task.data["strategy"] == "refine"
    _, result = step(job, answer(trader_text()))
    assert result is not None
    record = result.extra["gmn"]
    assert record["valid"] and [h["strategy"] for h in record["history"]] == [
        "first",
        "refine",
        "refine",
    ]


def test_a_truncated_reply_gets_truncation_feedback_and_more_room_not_gmn010() -> None:
    # Given a 2,048-token context, a 400-token answer budget and a reply cut off at it,
    job = start(max_tokens=400, context_tokens=2048)
    cut = EXPLORER[: len(EXPLORER) // 2]
    nxt, _ = step(job, answer(cut, finish_reason="length", output_tokens=400))
    # then the round's verdict is GMN080 (not the fragment's GMN010),
    assert nxt is not None and nxt.task is not None
    assert nxt.task.data["history"][0]["codes"] == ["GMN080"]
    assert nxt.task.data["strategy"] == "more_tokens"
    # the next round is a fresh attempt told about the cut and its budget,
    assert roles(nxt.request) == ["system", "user"]
    note = nxt.request.messages[-1].content
    assert "Your previous answer was cut off at the answer limit of 400 tokens" in note
    assert "GMN010" not in note
    # with a larger budget that still fits the context.
    assert (
        nxt.request.body.get("max_tokens") is not None
        and 400 < nxt.request.body.get("max_tokens") <= 800
    )
    turns = [(m.role, m.content) for m in nxt.request.messages]
    assert prompt_tokens(turns) + nxt.request.body.get("max_tokens") <= 2048
    # A last round that is cut off ends as GMN080 too.
    _, result = step(start(max_rounds=1), answer(cut, finish_reason="length"))
    assert result is not None and [e["code"] for e in result.extra["gmn"]["errors"]] == ["GMN080"]


def test_without_a_known_context_the_budget_is_not_raised() -> None:
    nxt, _ = step(start(max_tokens=400), answer('{"nodes": [', finish_reason="length"))
    assert nxt is not None and nxt.request.body.get("max_tokens") == 400


def test_the_first_round_fits_a_small_context() -> None:
    spec = parse_prompt_line(LINE, 1)
    # 1,536 answer tokens do not fit next to the rules and example in 2,048: fewer do.
    request, data = first_round(spec, max_tokens=1536, context_tokens=2048)
    turns = [(m.role, m.content) for m in request.messages]
    assert request.body.get("max_tokens") is not None and request.body.get("max_tokens") < 1536
    assert prompt_tokens(turns) + request.body.get("max_tokens") <= 2048
    assert data.examples == ["explorer"] and data.context_tokens == 2048
    # In a context too small for the example too, the example goes.
    tight, tight_data = first_round(spec, max_tokens=600, context_tokens=1300)
    assert EXPLORER not in tight.messages[0].content and tight_data.examples == []
    assert tight.body.get("max_tokens") is not None
    assert (
        prompt_tokens([(m.role, m.content) for m in tight.messages]) + tight.body.get("max_tokens")
        <= 1300
    )
    # Without a context nothing changes.
    free, _ = first_round(spec, max_tokens=1536)
    assert free.body.get("max_tokens") == 1536


def test_refine_rounds_trim_the_error_list_first_then_the_earlier_answer() -> None:
    base = [("system", "s" * 3000), ("user", "u" * 300)]
    listed: list[tuple[int | None, bool]] = []

    def build(limit: int | None, with_answer: bool) -> list[tuple[str, str]]:
        listed.append((limit, with_answer))
        errors = "e" * 60 * (50 if limit is None else limit)
        answer = [("assistant", "a" * 1500)] if with_answer else []
        return [*base, *answer, ("user", errors)]

    # The full round needs ~2,970 tokens of prompt: with 500 to answer, 3,000 is too small,
    full = prompt_tokens(build(None, True))
    fitted = fit_round(build, 50, 500, full + 100)
    # so errors are cut first, and the answer stays;
    assert fitted.fits and not fitted.dropped_answer
    assert fitted.errors_listed is not None and 1 <= fitted.errors_listed < 50
    assert room(fitted.turns, full + 100) >= 500
    # in less room the answer goes too, and at last max_tokens shrinks to what is left.
    no_answer = fit_round(build, 50, 500, prompt_tokens(build(1, False)) + 600)
    assert no_answer.dropped_answer and no_answer.max_tokens == 500
    squeezed = fit_round(build, 50, 500, prompt_tokens(build(1, False)) + 300)
    assert squeezed.fits and squeezed.max_tokens == 300
    hopeless = fit_round(build, 50, 500, 100)
    assert not hopeless.fits
    # Context fitting counts 3 characters a token (pessimistic for JSON), plus the overhead.
    assert prompt_tokens([("user", "x" * 30)]) == 10 + MESSAGE_OVERHEAD


def test_the_reviewer_keeps_refine_rounds_inside_a_2048_token_context() -> None:
    # Given a document with many errors and a 2,048-token context with 700 tokens to answer,
    job = start(max_tokens=700, context_tokens=2048)
    doc = orjson.loads(trader_text())
    for i in range(40):
        doc["nodes"].append({"id": f"extra_{i}", "type": "policy"})
    nxt, _ = step(job, answer(orjson.dumps(doc).decode()))
    # then the refine round lists fewer errors (the answer itself is long) and still fits.
    assert nxt is not None and nxt.request.body.get("max_tokens") is not None
    turns = [(m.role, m.content) for m in nxt.request.messages]
    assert prompt_tokens(turns) + nxt.request.body.get("max_tokens") <= 2048
    assert roles(nxt.request) == ["system", "user"], "the long answer was left out"
    assert "left out here to save room" in turns[-1][1] and "- GMN054: every node" in turns[-1][1]


def verdict(round_: int, codes: list[str], strategy: str) -> RoundVerdict:
    return RoundVerdict(round=round_, valid=not codes, codes=codes, strategy=strategy)


def test_strategy_order() -> None:
    same: list[Any] = [verdict(1, ["GMN052"], "first")]
    assert next_strategy(same, truncated=False, endpoints=1) == "refine"
    same.append(verdict(2, ["GMN052"], "refine"))
    assert next_strategy(same, truncated=False, endpoints=1) == "fresh"
    same.append(verdict(3, ["GMN052"], "fresh"))
    same.append(verdict(4, ["GMN052"], "hotter"))
    assert next_strategy(same, truncated=False, endpoints=1) == "fresh", "one endpoint: no switch"
    assert next_strategy(same, truncated=False, endpoints=3) == "other_endpoint"
    cut = [verdict(1, ["GMN080"], "first")]
    assert next_strategy(cut, truncated=True, endpoints=1) == "more_tokens"
    cut.append(verdict(2, ["GMN080"], "more_tokens"))
    assert next_strategy(cut, truncated=True, endpoints=1) == "fresh", "more room did not help"
