"""The fake provider server itself: wire formats, scripted faults, rate limits, request log, CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from providers.fake_server import FakeServer, Fault, FaultPlan, SlidingWindow
from providers.fake_server.__main__ import parser
from providers.fake_server.faults import go_duration

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
OLLAMA = "/api/chat"
MESSAGES = [{"role": "user", "content": "hello fake"}]
BODIES: dict[str, dict[str, Any]] = {
    OPENAI: {"model": "gpt-4o", "messages": MESSAGES},
    ANTHROPIC: {"model": "claude", "max_tokens": 16, "messages": MESSAGES},
    OLLAMA: {"model": "llama3.2", "messages": MESSAGES, "stream": False},
}
HEADERS = {ANTHROPIC: {"anthropic-version": "2023-06-01"}}


async def post(
    session: aiohttp.ClientSession,
    server: FakeServer,
    path: str,
    custom_id: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any, CIMultiDict[str]]:
    headers = dict(HEADERS.get(path, {}))
    if custom_id is not None:
        headers["x-batchyard-custom-id"] = custom_id
    async with session.post(server.url + path, json=body or BODIES[path], headers=headers) as r:
        data = await r.json(content_type=None) if r.content_type != "text/html" else await r.text()
        return r.status, data, CIMultiDict(r.headers)


async def test_binds_localhost_on_a_free_port_and_stops() -> None:
    server = FakeServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    await server.start()
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.openai_url.endswith("/v1")
    await server.stop()
    await server.stop()  # idempotent


async def test_success_bodies_follow_each_vendor(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    status, oa, headers = await post(session, server, OPENAI)
    assert status == 200 and oa["object"] == "chat.completion"
    assert oa["choices"][0]["message"]["content"] == "hello fake"
    usage = oa["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (3, 3, 6)
    assert headers["x-request-id"].startswith("req_")

    status, an, headers = await post(session, server, ANTHROPIC)
    assert status == 200 and an["type"] == "message" and an["stop_reason"] == "end_turn"
    assert an["content"] == [{"type": "text", "text": "hello fake"}]
    assert headers["request-id"].startswith("req_")

    status, ol, _ = await post(session, server, OLLAMA)
    assert status == 200 and ol["done"] is True and ol["message"]["content"] == "hello fake"
    assert ol["prompt_eval_count"] == 3 and ol["eval_count"] == 3


async def test_error_bodies_follow_each_vendor(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push("overloaded", "overloaded", "not_found")
    status, oa, _ = await post(session, server, OPENAI)
    assert status == 503 and oa["error"]["code"] == "server_is_overloaded"
    status, an, _ = await post(session, server, ANTHROPIC)
    assert status == 529 and an == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": an["request_id"],
    }
    status, ol, _ = await post(session, server, OLLAMA)
    assert status == 404 and ol == {"error": "model 'llama3.2' not found"}


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC, OLLAMA])
async def test_bodies_that_are_not_the_wire_format_get_the_vendors_400(
    server: FakeServer, session: aiohttp.ClientSession, path: str
) -> None:
    status, body, _ = await post(session, server, path, body={"messages": MESSAGES})
    assert status == 400
    assert "error" in body
    assert server.requests[-1].fault == "bad_request"


async def test_scripts_per_custom_id_and_shared_queue(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    # Given a script for one request id and a shared queue for everyone else
    server.faults.push("server_error", "ok", custom_id="a")
    server.faults.push("bad_gateway")

    # When requests a, b, a, b arrive
    statuses = [
        (await post(session, server, OPENAI, custom_id=cid))[0] for cid in ("a", "b", "a", "b")
    ]

    # Then a gets its own script, b the shared queue, and the log says so
    assert statuses == [500, 502, 200, 200]
    assert [(r.custom_id, r.status, r.fault) for r in server.requests] == [
        ("a", 500, "server_error"),
        ("b", 502, "bad_gateway"),
        ("a", 200, "ok"),
        ("b", 200, "ok"),
    ]
    assert len(server.calls(custom_id="a")) == 2
    assert len(server.calls(path=OPENAI, status=200)) == 2
    assert all(r.model == "gpt-4o" and r.vendor == "openai" for r in server.requests)


async def test_dropped_connections_are_logged_without_status(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push("drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, server, OPENAI)
    assert server.requests[-1].status is None


async def test_truncated_body_is_half_of_a_valid_one(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push("truncate")
    async with session.post(server.url + OLLAMA, json=BODIES[OLLAMA]) as r:
        raw = await r.read()
    assert r.status == 200 and raw.startswith(b'{"model":"llama3.2"') and not raw.endswith(b"}")


async def test_rate_limit_fault_sends_the_real_header_names(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.faults.push(
        Fault(kind="rate_limited", retry_after_s=2, retry_after_ms=2000, reset_tokens_s=0.5)
    )
    status, body, headers = await post(session, server, OPENAI)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "2000"
    assert headers["x-ratelimit-reset-tokens"] == "500ms"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-reset-requests" not in headers


async def test_enforced_rpm_uses_a_sliding_window(session: aiohttp.ClientSession) -> None:
    # Given a 2-per-60s limit and a clock the test moves
    now = [1000.0]
    async with FakeServer(rpm=2, clock=lambda: now[0], limit_algorithm="window") as server:
        first = await post(session, server, OPENAI)
        now[0] += 10
        second = await post(session, server, OPENAI)
        third = await post(session, server, OPENAI)
        now[0] += 50.5  # the first request has left the window
        fourth = await post(session, server, OPENAI)

    assert [first[0], second[0], third[0], fourth[0]] == [200, 200, 429, 200]
    _, body, headers = third
    assert headers["retry-after"] == "50"
    assert headers["retry-after-ms"] == "50000"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per min (RPM)" in body["error"]["message"]
    assert first[2]["x-ratelimit-remaining-requests"] == "1"
    assert [r.fault for r in server.requests] == ["ok", "ok", "limit", "ok"]


async def test_enforced_tpm_counts_prompt_and_max_tokens(session: aiohttp.ClientSession) -> None:
    async with FakeServer(tpm=100, limit_algorithm="window") as server:
        small = {**BODIES[ANTHROPIC], "max_tokens": 40}
        statuses = [(await post(session, server, ANTHROPIC, body=small))[0] for _ in range(3)]
        _, body, headers = await post(session, server, ANTHROPIC, body=small)
    assert statuses == [200, 200, 429]
    assert body["error"]["type"] == "rate_limit_error"
    assert headers["anthropic-ratelimit-tokens-limit"] == "100"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "14"
    assert int(headers["retry-after"]) > 0


def test_sliding_window_waits_for_the_right_entry() -> None:
    now = [0.0]
    window = SlidingWindow(rpm=3, tpm=10, window_s=60, clock=lambda: now[0])
    for t in (0, 1, 2):
        now[0] = t
        assert window.admit(1) is None
    now[0] = 3
    assert window.admit(1) == pytest.approx(57)  # RPM: the oldest must leave first
    now[0] = 60.5
    assert window.admit(9) == pytest.approx(0.5)  # TPM: 2 + 9 > 10 until t=1 leaves
    assert window.admit(11) == 60  # can never fit
    state = window.state()
    assert (state.remaining_requests, state.remaining_tokens) == (1, 8)


async def test_random_faults_replay_with_a_seed(session: aiohttp.ClientSession) -> None:
    async def run(seed: int) -> list[int]:
        async with FakeServer() as server:
            server.faults.set_rates({"server_error": 0.3, "overloaded": 0.2}, seed=seed)
            return [(await post(session, server, OLLAMA))[0] for _ in range(30)]

    first, again = await run(5), await run(5)
    assert first == again
    assert {500, 503, 200} == set(first)


async def test_api_key_and_models_are_enforced(session: aiohttp.ClientSession) -> None:
    async with FakeServer(api_key="k", models=["gpt-4o"]) as server:
        assert (await post(session, server, OPENAI))[0] == 401
        async with session.post(
            server.openai_url + "/chat/completions",
            json={**BODIES[OPENAI], "model": "gpt-9"},
            headers={"authorization": "Bearer k"},
        ) as r:
            assert r.status == 404
        async with session.get(server.url + "/api/tags") as r:
            assert r.status == 401
        async with session.get(
            server.openai_url + "/models", headers={"authorization": "Bearer k"}
        ) as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["gpt-4o"]


async def test_latency_and_slow_faults_delay_the_answer(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        slept.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    async with FakeServer(latency_ms=30) as server:
        server.faults.push("slow:100")
        await post(session, server, OPENAI)
    # The handler waited the latency plus the fault's delay before answering.
    assert pytest.approx(0.13) in slept


def test_fault_shorthand() -> None:
    assert Fault.of("rate_limited:2.5") == Fault(kind="rate_limited", retry_after_s=2.5)
    assert Fault.of("slow:300") == Fault(kind="ok", delay_ms=300)
    assert Fault.of("raw:418").status == 418
    assert Fault.of({"kind": "cut"}).kind == "cut"
    with pytest.raises(ValueError, match="unknown fault 'gremlins'"):
        Fault.of("gremlins")


def test_fault_plan_rejects_bad_rates() -> None:
    plan = FaultPlan()
    with pytest.raises(ValueError, match="unknown fault kinds"):
        plan.set_rates({"gremlins": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        plan.set_rates({"drop": 0.6, "cut": 0.6})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3723.5, "1h2m3.5s")],
)
def test_go_duration_formats_like_openai(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_cli_options_map_onto_the_server() -> None:
    args = parser().parse_args(
        ["--port", "8089", "--rpm", "600", "--latency-ms", "50", "--fault-rate", "drop=0.1"]
    )
    assert (args.port, args.rpm, args.latency_ms) == (8089, 600, 50.0)
    assert args.fault_rate == [("drop", 0.1)]
    with pytest.raises(SystemExit):
        parser().parse_args(["--fault-rate", "gremlins=1"])


async def test_a_responder_scripts_the_model_and_bodies_are_recorded(
    session: aiohttp.ClientSession,
) -> None:
    # Given a model that answers by max_tokens: cut off at 5 tokens, whole above,
    def model(call: Any) -> Fault | str | None:
        if call.max_tokens is not None and call.max_tokens < 10:
            return Fault(text='{"nodes": [', finish_reason="length", output_tokens=5)
        return None if call.last_user == "echo" else f"{len(call.messages)} turns"

    async with FakeServer(responder=model, record_bodies=True) as server:
        short = {**BODIES[OPENAI], "max_tokens": 5}
        _, cut, _ = await post(session, server, OPENAI, "c-1", short)
        _, whole, _ = await post(session, server, OPENAI, "c-2")
        _, echo, _ = await post(
            session,
            server,
            OPENAI,
            body={"model": "m", "messages": [{"role": "user", "content": "echo"}]},
        )
        server.faults.push(Fault(text="scripted"), custom_id="c-3")
        _, scripted, _ = await post(session, server, OPENAI, "c-3")
    # then each reply is the responder's, a scripted fault still wins,
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["choices"][0]["message"]["content"] == '{"nodes": ['
    assert cut["usage"]["completion_tokens"] == 5
    assert whole["choices"][0]["message"]["content"] == "1 turns"
    assert echo["choices"][0]["message"]["content"] == "echo"
    assert scripted["choices"][0]["message"]["content"] == "scripted"
    # and the log keeps each body as it came over the wire.
    [first] = server.calls(custom_id="c-1")
    assert first.body == short


async def test_bodies_are_not_kept_unless_asked(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    await post(session, server, OPENAI)
    assert server.requests[-1].body is None
