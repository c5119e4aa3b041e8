"""GMN on the generic structured mechanism (#20, #23) over real HTTP: the GMN JSON Schema goes
on the wire to endpoints that decode under a schema, and best-of-k on an endpoint without `n`
(llama.cpp's server rejects `n > 1`) is k separate calls in round 1, the first valid kept.
Real Redis, a real worker process, the fake OpenAI server; wire bodies asserted."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from producers.client import Client
from providers.fake_server import Call, FakeServer, Fault
from providers.mock_gmn import build_document
from schemas.gmn.json_schema import grounded_schema
from schemas.gmn.prompts import GMNConstraints
from tests.conftest import WorkerPool, gmn_outcomes

pytestmark = pytest.mark.integration

_NUMBER = re.compile(r"number (\d+)")


def valid_document(prompt: str) -> str:
    doc = build_document(prompt, "explorer", GMNConstraints(), random.Random(0))
    return orjson.dumps(doc).decode()


def endpoint(server: FakeServer, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": server.openai_url,
        "model": "tiny",
        "prices": {"*": {"input": 1.0, "output": 2.0}},
        **extra,
    }


def lines(count: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"p-{n}",
            "prompt": f"Explorer number {n} walks a 2x2 grid towards the goal.",
            "agent_type": "explorer",
        }
        for n in range(count)
    ]


def test_the_gmn_schema_reaches_endpoints_that_decode_under_one(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given one endpoint whose adapter decodes under a schema (OpenAI-compatible: llama.cpp,
    # vLLM) and one configured not to (`structured: {constrained: false}`), both in JSON mode,
    server = fake_server(responder=lambda call: valid_document(call.last_user), record_bodies=True)
    run_workers(
        {
            "endpoints": {
                "grammar": endpoint(server),
                "plain": endpoint(server, model="plain", structured={"constrained": False}),
            },
            "routes": {"default": ["grammar"], "plain": ["plain"]},
        }
    )
    with Client(redis_url) as client:
        strict = gmn_outcomes(client, lines(2), json_mode=True)
        loose = gmn_outcomes(client, lines(1), json_mode=True, route="plain")
    assert all(o.valid and o.rounds == 1 for o in [*strict.values(), *loose.values()])
    sent = {c.model: c.body for c in server.requests}
    # then the GMN JSON Schema goes over the wire in the OpenAI shape llama.cpp's server reads
    # (response_format.json_schema.schema), not strict (it is no OpenAI strict-mode schema),
    assert sent["tiny"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "gmn",
            "schema": grounded_schema("explorer", GMNConstraints()),
            "strict": False,
        },
    }
    # and the other endpoint gets JSON mode only, its answers validated after the fact.
    assert sent["plain"]["response_format"] == {"type": "json_object"}


class NoNModel:
    """Like llama.cpp's server: `n` other than 1 is an error. Per prompt number n, the first
    n draws are prose (invalid) and later ones a valid document."""

    def __init__(self) -> None:
        self.draws: Counter[int] = Counter()

    def __call__(self, call: Call) -> Fault | str:
        if call.body.get("n", 1) != 1:
            return Fault(kind="bad_request", message="Only one completion choice is allowed")
        match = _NUMBER.search(call.messages[1][1])
        assert match is not None
        n = int(match.group(1))
        self.draws[n] += 1
        if self.draws[n] <= n:
            return Fault(text="I would describe the agent in words.", output_tokens=10)
        return Fault(text=valid_document(call.last_user), output_tokens=100)


def test_best_of_k_without_n_is_k_calls_in_round_one_and_keeps_the_first_valid(
    redis_url: str, run_workers: Callable[..., WorkerPool], fake_server: Callable[..., Any]
) -> None:
    # Given an endpoint that takes no `n` (declared: `structured: {n_choices: false}`) and a
    # model whose prompt n answers prose n times before a valid document,
    model = NoNModel()
    server = fake_server(responder=model, record_bodies=True)
    run_workers(
        {
            "endpoints": {"llama": endpoint(server, structured={"n_choices": False})},
            "routes": {"default": ["llama"]},
        }
    )
    with Client(redis_url) as client:
        found = gmn_outcomes(client, lines(5), candidates=3)
    # then no call asks for n,
    assert all("n" not in c.body for c in server.requests)
    # round 1 draws until a valid answer, at most 3 calls, and keeps the first valid one;
    calls = {n: len(server.calls(custom_id=f"p-{n}")) for n in range(5)}
    assert calls == {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
    for n in range(3):
        o = found[f"p-{n}"]
        assert (o.valid, o.rounds) == (True, 1)
        assert [(h.round, h.valid) for h in o.history] == [(1, True)]
    # and after 3 invalid draws the rounds go on as usual: round 2 refines the kept answer.
    assert [(h.round, h.valid) for h in found["p-3"].history] == [(1, False), (2, True)]
    assert [(h.round, h.valid) for h in found["p-4"].history] == [(1, False), (2, False), (3, True)]
    for n in (3, 4):
        refine = server.calls(custom_id=f"p-{n}")[3].body
        assert [m["role"] for m in refine["messages"]] == ["system", "user", "assistant", "user"]
        assert "GMN081" in refine["messages"][3]["content"]
    # Every call counts in tokens and cost: each prose draw 10 output tokens, the document 100.
    for n in range(5):
        o = found[f"p-{n}"]
        assert o.tokens["output_tokens"] == 10 * n + 100
        assert o.cost == pytest.approx(
            o.tokens["input_tokens"] * 1e-6 + o.tokens["output_tokens"] * 2e-6
        )
