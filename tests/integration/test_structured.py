"""Structured output for any request (#20) with real Redis, a real worker process and the fake
OpenAI server over HTTP: answers are checked against the request's JSON Schema and invalid
ones go back to the model as refine rounds, each a queued job; the wire bodies are asserted."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.client import Client
from producers.structured_report import StructuredReport
from providers.fake_server import Call, FakeServer, Fault
from schemas.result import LLMResult
from tests.conftest import ROOT, WorkerPool, batchyard, cli_env, openai_line, wait_until

pytestmark = pytest.mark.integration

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "age", "email"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
#: Round 1: not JSON; round 2: JSON the schema rejects (a type and a format); round 3: valid.
ANSWERS = [
    '{"name": "Ada", "age": 36,',
    '{"name": "Ada", "age": "thirty-six", "email": "ada-at-example"}',
    '{"name": "Ada", "age": 36, "email": "ada@example.com"}',
]


def scripted(call: Call) -> str:
    """The answer after the one a refine round shows (a refine round shows only the last)."""
    last = [text for role, text in call.messages if role == "assistant"]
    return ANSWERS[ANSWERS.index(last[-1]) + 1 if last else 0]


def config(server: FakeServer, **endpoint: Any) -> dict[str, Any]:
    return {
        "endpoints": {
            "llm": {
                "provider": "openai",
                "base_url": server.openai_url,
                "model": "small",
                "prices": {"*": {"input": 1.0, "output": 2.0}},
                **endpoint,
            }
        },
        "routes": {"default": ["llm"]},
    }


def finish(client: Client, batch_id: str, timeout_s: float = 90) -> list[LLMResult]:
    wait_until(lambda: client.batch(batch_id).finished, timeout_s, f"batch {batch_id} to finish")
    return [r for _, _, r in client.iter_results(batch_id)]


def test_invalid_then_schema_violating_then_valid_ends_valid_after_three_rounds(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given a model that answers broken JSON, then JSON the schema rejects, then a valid answer,
    server = fake_server(responder=scripted, record_bodies=True)
    run_workers(config(server))
    n = 200
    lines = [
        openai_line(f"s-{i}", f"Extract the person from note {i}.", response_format=FORMAT)
        for i in range(n)
    ]
    # when 200 json_schema requests run (3 rounds by default),
    with Client(redis_url) as client:
        results = finish(client, client.submit_many(lines).batch_id)
        batch = client.batch(results[0].batch_id)
    # then every one ends a succeeded call with a valid answer after 3 rounds,
    assert sorted(r.custom_id or "" for r in results) == sorted(f"s-{i}" for i in range(n))
    assert batch.counts.completed == n and batch.counts.failed == 0
    for r in results:
        record = r.extra["structured"]
        assert (r.status, record["valid"], record["rounds"], record["errors"]) == (
            "succeeded", True, 3, []
        )  # fmt: skip
        assert record["value"] == orjson.loads(ANSWERS[2])
        # each round visible in the history, with what was wrong,
        history = record["history"]
        assert [h["round"] for h in history] == [1, 2, 3]
        assert [h["valid"] for h in history] == [False, False, True]
        assert [h["answer"] for h in history] == ANSWERS
        [broken] = history[0]["errors"]
        assert broken["pointer"] == "" and broken["message"].startswith("not valid JSON")
        assert {(e["pointer"], e["code"]) for e in history[1]["errors"]} == {
            ("/age", "type"),
            ("/email", "format"),
        }
        # and usage and cost summed over the rounds.
        assert r.usage.input_tokens == sum(h["usage"]["input_tokens"] for h in history)
        assert r.usage.output_tokens == sum(h["usage"]["output_tokens"] for h in history) > 0
        assert r.cost_usd == pytest.approx(sum(h["cost_usd"] for h in history))
    # The report counts validity per round, the most frequent errors, tokens per valid answer.
    report = StructuredReport()
    for r in results:
        report.add(r)
    data = report.to_dict()
    rows = [(b["answers"], b["valid_answers"], b["valid_after_round"]) for b in data["by_round"]]
    assert rows == [(n, 0, 0.0), (n, 0, 0.0), (n, n, 1.0)]
    assert data["errors_all_rounds"] == {"json": n, "type at /age": n, "format at /email": n}
    assert data["errors_final"] == {} and data["validity"] == 1.0
    assert (
        data["tokens_per_valid"]
        == sum(r.usage.input_tokens + r.usage.output_tokens for r in results) / n
    )
    assert data["cost_per_valid_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in results) / n)
    # The refine rounds went over the wire with the user's turn, the last answer, the errors.
    bodies = [c.body for c in server.requests if c.path == "/v1/chat/completions"]
    assert len(bodies) == 3 * n
    by_round = Counter(len(b["messages"]) for b in bodies)
    assert by_round == {1: n, 3: 2 * n}
    for body in bodies:
        assert body["response_format"]["json_schema"]["schema"] == SCHEMA
        turns = body["messages"]
        if len(turns) == 1:
            continue
        assert turns[0]["role"] == "user" and turns[0]["content"].startswith("Extract the person")
        assert turns[1] == {"role": "assistant", "content": turns[1]["content"]}
        refine = turns[2]["content"]
        assert turns[2]["role"] == "user"
        if turns[1]["content"] == ANSWERS[0]:
            assert '- "": not valid JSON' in refine
        else:
            assert turns[1]["content"] == ANSWERS[1]
            assert "- \"/age\": 'thirty-six' is not of type 'integer'" in refine
            assert "- \"/email\": 'ada-at-example' is not a 'email'" in refine


def test_max_rounds_from_the_request_and_a_final_invalid_answer_is_a_succeeded_call(
    tmp_path: Path,
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
) -> None:
    server = fake_server(responder=scripted, record_bodies=True)
    run_workers(config(server, structured={"max_rounds": 5}))
    lines = [
        # the body's `batchyard` extension wins over the endpoint's default, never goes upstream
        openai_line("two", "note", response_format=FORMAT, batchyard={"max_rounds": 2}),
        openai_line("plain", "no schema here"),
        openai_line(
            "bad-schema",
            "x",
            response_format={**FORMAT, "json_schema": {"name": "p", "schema": {"type": "objekt"}}},
        ),
    ]
    with Client(redis_url) as client:
        report = client.submit_many(lines)
        results = {r.custom_id: r for r in finish(client, report.batch_id)}
    two = results["two"]
    record = two.extra["structured"]
    assert (two.status, record["valid"], record["rounds"]) == ("succeeded", False, 2)
    assert [e["pointer"] for e in record["errors"]] == ["/age", "/email"]
    assert "structured" not in results["plain"].extra
    bad = results["bad-schema"]
    assert bad.status == "errored" and bad.error is not None
    assert bad.error.message.startswith(
        "line 3: body.response_format.json_schema.schema: not a valid JSON Schema: "
    )
    sent = [c.body for c in server.requests]
    assert len(sent) == 3 and all("batchyard" not in b for b in sent)
    # `batchyard report` shows it for the batch, plain requests apart.
    env = cli_env(redis_url, BATCHYARD_CONFIG=os.environ["BATCHYARD_CONFIG"])
    data = orjson.loads(batchyard("report", report.batch_id, "--json", env=env, cwd=tmp_path))
    assert (data["requests"], data["structured"], data["plain"], data["valid"]) == (3, 1, 2, 0)
    assert data["errors_final"] == {"type at /age": 1, "format at /email": 1}
    assert [row["answers"] for row in data["by_round"]] == [1, 1]


VALIDATOR = '''
from schemas.structured import Issue, Verdict


def shouting(answer, request, options):
    """Valid when every letter is a capital; says which words are not."""
    quiet = [w for w in answer.split() if w != w.upper()]
    errors = [Issue(pointer="", message=f"{w!r} is not in capitals", code="quiet") for w in quiet]
    return Verdict(valid=not errors, errors=errors, value=answer)
'''


def install_validator(site: Path) -> None:
    """What `pip install acme-checks` leaves behind: a module and a dist-info with entry points."""
    site.mkdir(parents=True)
    (site / "acme_checks.py").write_text(VALIDATOR)
    info = site / "acme_checks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-checks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[batchyard.validators]\nshout = acme_checks:shouting\n")


def test_a_third_party_validator_package_checks_the_requests_that_name_it(
    tmp_path: Path,
    redis_url: str,
    run_workers: Callable[..., WorkerPool],
    fake_server: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a package installed beside batchyard (producer and worker both see it),
    site = tmp_path / "site"
    install_validator(site)
    monkeypatch.syspath_prepend(str(site))

    # and a model that whispers first and shouts when told which words were quiet,
    def model(call: Call) -> str:
        return "HELLO THERE" if "'hello' is not in capitals" in call.last_user else "hello THERE"

    server = fake_server(responder=model, record_bodies=True)
    run_workers(config(server), PYTHONPATH=os.pathsep.join([str(ROOT), str(site)]))
    line = openai_line("loud", "greet me", batchyard={"validator": "shout"})
    with Client(redis_url) as client:
        [result] = finish(client, client.submit_many([line]).batch_id)
    record = result.extra["structured"]
    assert (record["validator"], record["valid"], record["rounds"]) == ("shout", True, 2)
    assert record["history"][0]["errors"] == [
        {"pointer": "", "message": "'hello' is not in capitals", "code": "quiet"}
    ]
    assert result.output == "HELLO THERE"
    refine = server.requests[1].body["messages"][-1]["content"]
    assert "- \"\": 'hello' is not in capitals" in refine


def test_the_schema_reaches_the_wire_where_the_endpoint_decodes_under_it_and_only_there(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given one server behind four endpoints: OpenAI and Ollama decode under a schema; an
    # OpenAI-compatible server configured as not honouring it; Anthropic, which has no such
    # field in its Messages API,
    server = fake_server(responder=scripted, record_bodies=True)
    endpoints = {
        "strict": {"provider": "openai", "base_url": server.openai_url, "model": "s"},
        "loose": {
            "provider": "openai",
            "base_url": server.openai_url,
            "model": "l",
            "structured": {"constrained": False},
        },
        "ollama": {"provider": "ollama", "base_url": server.url, "model": "o"},
        "claude": {"provider": "anthropic", "base_url": server.url, "model": "c", "api_key": "k"},
    }
    run_workers({"endpoints": endpoints, "routes": {"default": ["strict"]}})
    lines = [
        openai_line(name, f"note for {name}", response_format=FORMAT, route=[{"endpoint": name}])
        for name in endpoints
    ]
    for line in lines:
        del line["body"]["model"]  # type: ignore[attr-defined]  # each endpoint's own model
    with Client(redis_url) as client:
        results = {r.custom_id: r for r in finish(client, client.submit_many(lines).batch_id)}
    # then every answer is validated and refined the same way, wherever it ran,
    for name, r in results.items():
        record = r.extra["structured"]
        assert (r.status, r.endpoint, record["valid"], record["rounds"]) == (
            "succeeded", name, True, 3
        )  # fmt: skip
    firsts: dict[str, dict[str, Any]] = {}
    for c in server.requests:
        firsts.setdefault(c.model or "", c.body)
    # and the schema went over the wire, strict, only to the endpoints that decode under it.
    strict = firsts["s"]["response_format"]
    assert strict["type"] == "json_schema" and strict["json_schema"]["strict"] is True
    assert strict["json_schema"]["schema"] == SCHEMA
    assert firsts["o"]["format"] == SCHEMA
    assert firsts["l"]["response_format"] == {"type": "json_object"}
    assert "response_format" not in firsts["c"] and "output_format" not in firsts["c"]
    assert "SCHEMA" not in orjson.dumps(firsts["c"]).decode()


def test_best_of_k_asks_for_n_answers_and_keeps_the_first_valid_one(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given a model whose first two of three choices are invalid,
    def model(call: Call) -> Fault | str:
        if call.body.get("n") == 3:
            return Fault(text=ANSWERS[0], choices=[ANSWERS[1], ANSWERS[2]], output_tokens=60)
        return ANSWERS[0]

    server = fake_server(responder=model, record_bodies=True)
    run_workers(config(server))
    line = openai_line("k", "note", response_format=FORMAT, batchyard={"candidates": 3})
    with Client(redis_url) as client:
        [result] = finish(client, client.submit_many([line]).batch_id)
    # when it asks for 3 candidates, one call with n=3 is enough: the third answer is kept,
    [sent] = [c.body for c in server.requests]
    assert sent["n"] == 3
    record = result.extra["structured"]
    assert (record["valid"], record["rounds"], result.output) == (True, 1, ANSWERS[2])
    assert record["history"][0]["candidates"] == 3
    # and the usage of every choice (as the server reports it for the call) is counted.
    assert result.usage.output_tokens == 60
