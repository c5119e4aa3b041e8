"""A batch file of the kind people send to OpenAI's Batch API — reasoning model, images, tools,
a tool conversation, embeddings, a Responses line — through `batchyard run`, `submit` /
`collect` and the gateway (official SDK): every body reaches the provider as written, every
answer comes back as the provider gave it; routed across vendors, it is translated both ways."""

from __future__ import annotations

import copy
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis

from producers.client import Client
from schemas import vectors
from schemas.result import Attempt, ErrorInfo, LLMResult
from tests.conftest import WorkerPool, batchyard, cli_env, read_jsonl, write_jsonl
from tests.integration.test_dashboard import login
from tests.integration.test_gateway_api import new_batch, settled
from tests.integration.test_gateway_support import (
    KEY_A,
    GatewayProcess,
    api,
    gateway_config,
    gateway_proc,
    jsonl,
)
from workers.protocol.keys import Keys
from workers.protocol.results import entry, write_call
from workers.protocol.scripts import Lua, register

pytestmark = pytest.mark.integration
__all__ = ["api", "gateway_config", "gateway_proc"]  # fixtures used by name

ANTHROPIC_KEY = "sk-ant-fidelity-0001"
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/"
    + "PchI7wAAAABJRU5ErkJggg=="
)
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    }
]
CHAT, EMBEDDINGS, RESPONSES = "/v1/chat/completions", "/v1/embeddings", "/v1/responses"


def line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def acceptance_file() -> list[dict[str, Any]]:
    """The issue's file: one line of each kind a real batch holds."""
    return [
        line(
            "reasoning",
            CHAT,
            {
                "model": "o3-mini",
                "messages": [
                    {"role": "developer", "content": "Answer in one word."},
                    {"role": "user", "content": "Capital of France?"},
                ],
                "max_completion_tokens": 2000,
                "reasoning_effort": "low",
                "store": False,
                "metadata": {"team": "geo"},
            },
        ),
        line(
            "vision",
            CHAT,
            {
                "model": "gpt-4o",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in these images?"},
                            {
                                "type": "image_url",
                                "image_url": {
                                    "url": f"data:image/png;base64,{PNG}",
                                    "detail": "low",
                                },
                            },
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/a.png"},
                            },
                        ],
                    }
                ],
                "max_tokens": 300,
            },
        ),
        line(
            "tools",
            CHAT,
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": TOOLS,
                "tool_choice": "required",
                "seed": 11,
            },
        ),
        line(
            "conversation",
            CHAT,
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city":"Paris"}',
                                },
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
                ],
                "tools": TOOLS,
            },
        ),
        line("embed-one", EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hello"}),
        line(
            "embed-many",
            EMBEDDINGS,
            {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "dimensions": 8},
        ),
        line(
            "respond",
            RESPONSES,
            {"model": "gpt-4.1", "input": "Say hi", "instructions": "Be warm.", "store": False},
        ),
    ]


def replies(server: Any) -> dict[str, Any]:
    """What the fake server answered each custom id with (its last successful call)."""
    return {r.custom_id: orjson.loads(r.reply) for r in server.requests if r.status == 200}


def received(server: Any, path: str) -> dict[str, Any]:
    """The bodies the fake server received on `path`, by custom id."""
    return {r.custom_id: r.body for r in server.calls(path=path)}


def test_batchyard_run_sends_every_body_as_written_and_keeps_every_answer(
    tmp_path: Path, fake_server: Callable[..., Any]
) -> None:
    # Given the file, one line pinning its model through the batchyard `route` extension,
    server = fake_server(record_bodies=True)
    rows = acceptance_file()
    rows[0]["body"]["route"] = [{"endpoint": "oa", "model": "o3-pinned"}]
    written = copy.deepcopy(rows)
    config = {"endpoints": {"oa": {"provider": "openai", "base_url": server.openai_url}}}
    (tmp_path / "batchyard.yaml").write_text(orjson.dumps(config).decode())
    write_jsonl(tmp_path / "in.jsonl", rows)
    # when `batchyard run` runs it against the fake OpenAI server,
    batchyard("run", "in.jsonl", "-o", "out.jsonl", env=cli_env(), cwd=tmp_path)
    out = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    # then every line succeeded,
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    assert sorted(out) == sorted(r["custom_id"] for r in written)
    # each body reached the server exactly as written (only `model` chosen by batchyard),
    paths = {CHAT: received(server, CHAT), EMBEDDINGS: received(server, EMBEDDINGS)}
    paths[RESPONSES] = received(server, RESPONSES)
    for row in written:
        expected = dict(row["body"])
        if "route" in expected:
            del expected["route"]
            expected["model"] = "o3-pinned"
        assert paths[row["url"]][row["custom_id"]] == expected, row["custom_id"]
    # and every output line carries the provider's answer unchanged: tool calls, every
    # vector, the Responses object.
    sent = replies(server)
    for custom_id, row in out.items():
        assert row["response"]["body"] == sent[custom_id], custom_id
    calls = out["tools"]["response"]["body"]["choices"][0]["message"]["tool_calls"]
    assert calls[0]["function"]["name"] == "get_weather"
    assert len(out["embed-many"]["response"]["body"]["data"]) == 3
    assert all(len(d["embedding"]) == 8 for d in out["embed-many"]["response"]["body"]["data"])
    assert out["respond"]["response"]["body"]["object"] == "response"


def test_a_route_across_vendors_translates_both_ways_and_skips_what_anthropic_cannot_serve(
    tmp_path: Path, redis_url: str, fake_server: Callable[..., Any], run_workers: Any
) -> None:
    # Given a route that tries Anthropic first, then OpenAI,
    server = fake_server(record_bodies=True)
    run_workers(
        {
            "endpoints": {
                "claude": {
                    "provider": "anthropic",
                    "base_url": server.url,
                    "api_key": ANTHROPIC_KEY,
                    "model": "claude-test",
                    "default_max_tokens": 512,
                },
                "oa": {"provider": "openai", "base_url": server.openai_url, "model": "gpt-test"},
            },
            "routes": {"default": ["claude", "oa"]},
        }
    )
    write_jsonl(tmp_path / "in.jsonl", acceptance_file())
    env = cli_env(redis_url)
    # when the file goes through `submit` and `collect`,
    batch_id = batchyard("submit", str(tmp_path / "in.jsonl"), env=env, cwd=tmp_path).strip()
    follow = ("--follow", "--format")
    out_path, native_path = str(tmp_path / "out.jsonl"), str(tmp_path / "native.jsonl")
    batchyard("collect", batch_id, "-o", out_path, *follow, "openai", env=env, cwd=tmp_path)
    batchyard("collect", batch_id, "-o", native_path, *follow, "native", env=env, cwd=tmp_path)
    out = {r["custom_id"]: r for r in read_jsonl(Path(out_path))}
    results = {r["custom_id"]: r for r in read_jsonl(Path(native_path))}
    assert len(out) == 7 and read_jsonl(tmp_path / "out.errors.jsonl") == []
    # then chat lines were answered by Anthropic, in Anthropic's wire format,
    chat = ["reasoning", "vision", "tools", "conversation"]
    assert all(results[c]["endpoint"] == "claude" for c in chat)
    wire = received(server, "/v1/messages")
    assert wire["tools"] == {
        "model": "claude-test",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}],
        "tool_choice": {"type": "any"},
    }
    assert wire["conversation"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"}
            ],
        },
    ]
    assert wire["reasoning"]["system"] == "Answer in one word."
    assert wire["reasoning"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert wire["vision"]["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    # and came back in OpenAI's format, the forced tool call included;
    tools_answer = out["tools"]["response"]["body"]
    assert tools_answer["object"] == "chat.completion"
    [call] = tools_answer["choices"][0]["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "x"}
    assert tools_answer["choices"][0]["finish_reason"] == "tool_calls"
    # embeddings and Responses lines skipped Anthropic without a call and ran on OpenAI.
    for custom_id in ("embed-one", "embed-many", "respond"):
        first, last = results[custom_id]["attempts"][0], results[custom_id]["attempts"][-1]
        assert (first["endpoint"], first["error"]) == ("claude", "unsupported")
        assert (last["endpoint"], last["error"]) == ("oa", None)
        assert custom_id not in wire
    assert received(server, EMBEDDINGS)["embed-one"]["model"] == "text-embedding-3-small"
    assert out["embed-many"]["response"]["body"] == replies(server)["embed-many"]


def stored(redis_url: str, batch_id: str) -> dict[str, tuple[bytes, LLMResult]]:
    """Each result of a batch as Redis holds it: the raw entry and the result it reads as."""
    client = redis.Redis.from_url(redis_url)
    try:
        rows = client.xrange(Keys().stream(batch_id))
    finally:
        client.close()
    out = {}
    for sid, fields in rows:
        _, _, result = entry(sid, fields)
        out[result.custom_id or ""] = (fields[b"r"], result)
    return out


def test_submit_and_collect_send_every_body_as_written_and_keep_vectors_compact(
    tmp_path: Path, redis_url: str, fake_server: Callable[..., Any], run_workers: Any
) -> None:
    # Given workers with an OpenAI-compatible endpoint (the default route) and an Anthropic one,
    server = fake_server(record_bodies=True)
    run_workers(
        {
            "endpoints": {
                "oa": {
                    "provider": "openai",
                    "base_url": server.openai_url,
                    "model": "gpt-test",
                    "prices": {
                        "text-embedding-3-small": {"input": 0.02, "output": 0},
                        "gpt-4.1": {"input": 2, "output": 8},
                    },
                },
                "claude": {
                    "provider": "anthropic",
                    "base_url": server.url,
                    "api_key": ANTHROPIC_KEY,
                    "model": "claude-test",
                },
            },
            "routes": {"default": ["oa"], "claude-only": ["claude"]},
        }
    )
    rows = acceptance_file()
    write_jsonl(tmp_path / "in.jsonl", rows)
    env = cli_env(redis_url)
    # when the file goes through `submit` and `collect`,
    batch_id = batchyard("submit", str(tmp_path / "in.jsonl"), env=env, cwd=tmp_path).strip()
    out_path = str(tmp_path / "out.jsonl")
    batchyard("collect", batch_id, "-o", out_path, "--follow", env=env, cwd=tmp_path)
    out = {r["custom_id"]: r for r in read_jsonl(Path(out_path))}
    # then every line succeeded, its body received upstream exactly as written (an endpoint of
    # the body's own vendor keeps the body's model) and its answer written out unchanged;
    assert sorted(out) == sorted(r["custom_id"] for r in rows)
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    sent = replies(server)
    for row in rows:
        assert received(server, row["url"])[row["custom_id"]] == row["body"], row["custom_id"]
        assert out[row["custom_id"]]["response"]["body"] == sent[row["custom_id"]]
    # the vectors were kept in Redis as base64 float32, not as JSON lists of decimals.
    raw, result = stored(redis_url, batch_id)["embed-many"]
    assert result.vectors == "float" and result.body is not None
    floats = [d["embedding"] for d in sent["embed-many"]["data"]]
    assert [vectors.decode(d["embedding"]) for d in result.body["data"]] == floats
    assert all(isinstance(d["embedding"], str) for d in orjson.loads(raw)["body"]["data"])
    # Usage and cost per kind: embeddings count input tokens only, each kind at its price.
    usage = sent["embed-many"]["usage"]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (usage["prompt_tokens"], 0)
    assert result.cost_usd == pytest.approx(usage["prompt_tokens"] * 0.02 / 1e6)
    _, respond = stored(redis_url, batch_id)["respond"]
    usage = sent["respond"]["usage"]
    assert (respond.usage.input_tokens, respond.usage.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    expected = (usage["input_tokens"] * 2 + usage["output_tokens"] * 8) / 1e6
    assert respond.cost_usd == pytest.approx(expected)
    # And lines no endpoint of their route can serve fail `unsupported`, naming what is
    # missing, and `batchyard failures` counts them by endpoint kind.
    write_jsonl(tmp_path / "claude.jsonl", rows[4:])
    args = ("--route", "claude-only")
    claude_batch = batchyard("submit", "claude.jsonl", *args, env=env, cwd=tmp_path).strip()
    follow = ("-o", str(tmp_path / "c.jsonl"), "--follow")
    batchyard("collect", claude_batch, *follow, env=env, cwd=tmp_path)
    errors = {r["custom_id"]: r["error"] for r in read_jsonl(tmp_path / "c.errors.jsonl")}
    assert {e["code"] for e in errors.values()} == {"unsupported"} and len(errors) == 3
    assert "embeddings requests" in errors["embed-one"]["message"]
    assert "responses requests" in errors["respond"]["message"]
    listing = batchyard("failures", claude_batch, "--ids", env=env, cwd=tmp_path)
    assert "3  unsupported  (2 embeddings, 1 responses)" in listing
    assert "embed-one  [embeddings]" in listing and "respond  [responses]" in listing
    assert received(server, "/v1/messages") == {}


def test_the_gateway_takes_every_endpoint_and_one_endpoint_per_batch(
    tmp_path: Path,
    redis_url: str,
    fake_server: Callable[..., Any],
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: Callable[..., GatewayProcess],
) -> None:
    server = fake_server(record_bodies=True)
    config = write_config(
        {"endpoints": {"oa": {"provider": "openai", "base_url": server.openai_url}}}
    )
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--concurrency", "10")
    gateway = gateway_proc(redis_url, "--config", str(config))
    client = openai.OpenAI(api_key=KEY_A, base_url=f"{gateway.url}/v1", max_retries=0, timeout=30)
    rows = acceptance_file()
    # Given the file split by endpoint, as OpenAI's Batch API requires,
    batches = {}
    for url in (CHAT, EMBEDDINGS, RESPONSES):
        part = [r for r in rows if r["url"] == url]
        uploaded = client.files.create(file=("in.jsonl", jsonl(part)), purpose="batch")
        batches[url] = client.batches.create(
            input_file_id=uploaded.id, endpoint=url, completion_window="24h"
        )
    # and a file whose line addresses another endpoint than its batch,
    wrong = client.files.create(file=("w.jsonl", jsonl(rows[4:5])), purpose="batch")
    mismatch = client.batches.create(input_file_id=wrong.id, endpoint=CHAT, completion_window="24h")
    # when they run,
    deadline = time.monotonic() + 60
    for url, batch in [*batches.items(), ("wrong", mismatch)]:
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline, f"{url} batch still {batch.status}"
            time.sleep(0.1)
            batch = client.batches.retrieve(batch.id)
        if url == "wrong":
            mismatch = batch
        else:
            batches[url] = batch
    # then each batch completed with the provider's answers unchanged,
    sent = replies(server)
    for url, batch in batches.items():
        assert batch.status == "completed", url
        assert batch.request_counts is not None and batch.request_counts.failed == 0
        assert batch.output_file_id is not None
        output = client.files.content(batch.output_file_id).content
        for raw in output.splitlines():
            row = orjson.loads(raw)
            assert row["response"]["body"] == sent[row["custom_id"]]
            sent_body = received(server, url)[row["custom_id"]]
            written = next(r["body"] for r in rows if r["custom_id"] == row["custom_id"])
            assert sent_body == written
    # and the mismatched line failed its batch, naming the line and the url.
    assert mismatch.status == "failed" and mismatch.errors and mismatch.errors.data
    [error] = mismatch.errors.data
    assert (error.line, error.param, error.code) == (1, "url", "url_mismatch")
    assert EMBEDDINGS in (error.message or "")
    # POST /v1/jobs takes a line of any endpoint and answers with the provider's body.
    for row in rows[4:]:
        job = {**row, "custom_id": f"job-{row['custom_id']}"}
        post = urllib.request.Request(
            f"{gateway.url}/v1/jobs?wait=30&format=openai",
            data=orjson.dumps(job),
            headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=60) as resp:
            assert resp.status == 200
            answer = orjson.loads(resp.read())["result"]["response"]["body"]
        assert answer == replies(server)[job["custom_id"]]
        assert received(server, row["url"])[job["custom_id"]] == row["body"]


def test_bad_lines_get_one_clear_error_each_and_good_lines_still_run(redis_url: str) -> None:
    good = acceptance_file()
    bad = [
        line("robot", CHAT, {"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
        line(
            "video",
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
        ),
        line(
            "orphan-tool",
            CHAT,
            {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]},
        ),
        line("no-input", EMBEDDINGS, {"model": "e"}),
    ]
    with Client(redis_url) as client:
        report = client.submit_many([*good[:4], *bad], endpoint=CHAT)
        results = {r.custom_id: r for _, _, r in client.iter_results(report.batch_id)}
    assert (report.enqueued, report.invalid) == (4, 4)
    messages = {cid: r.error.message for cid, r in results.items() if r.error}
    assert messages == {
        "robot": "line 5: body.messages.0.role: unknown role 'robot' (known: 'system', "
        "'developer', 'user', 'assistant', 'tool', 'function')",
        "video": "line 6: body.messages.0.content.0.type: unknown content part type 'video' "
        "(allowed: file, image_url, input_audio, text)",
        "orphan-tool": "line 7: body.messages.1.tool_call_id: field required for a tool message",
        "no-input": "line 8: url: this batch takes /v1/chat/completions requests, "
        "not /v1/embeddings",
    }
    assert all(r.error and r.error.code == "invalid_line" for r in results.values())
    with Client(redis_url) as client:
        report = client.submit_many([bad[3]])
        [(_, _, result)] = list(client.iter_results(report.batch_id))
    assert result.error is not None
    assert result.error.message.startswith("line 1: body.input: field required")


async def test_the_dashboard_names_the_kind_of_each_failed_request(
    api: Callable[..., Any], redis_url: str
) -> None:
    # Given an embeddings batch whose two lines failed as workers write failures,
    client = await api()
    rows = [r for r in acceptance_file() if r["url"] == EMBEDDINGS]
    created = await new_batch(client, KEY_A, jsonl(rows), endpoint=EMBEDDINGS)
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    items = []
    for row in rows:
        key = row["custom_id"]
        error = ErrorInfo(code="unsupported", message="no endpoint serves embeddings requests")
        result = LLMResult(
            custom_id=key,
            batch_id=batch_id,
            status="errored",
            kind="embeddings",
            error=error,
            attempts=[Attempt(endpoint="claude", error="unsupported")],
        )
        request = {"custom_id": key, "kind": "embeddings", "body": row["body"]}
        dead = {"status": "errored", "code": "unsupported", "request": request}
        dead["route"] = [{"endpoint": "claude"}]
        items.append((key, result, False, orjson.dumps(dead)))
    writer = redis.Redis.from_url(redis_url)
    try:
        register(writer, Lua.WRITE_RESULTS)(**write_call(Keys(), 3600, items))
    finally:
        writer.close()
    # when the batch page's data and its failed table are read,
    browser = await login(client, KEY_A)
    detail = await (await browser.get(f"/ui/api/batches/{batch_id}")).json()
    page = await (await browser.get(f"/batches/{batch_id}")).text()
    # then each failure names its endpoint kind.
    assert sorted((f["key"], f["kind"]) for f in detail["failures"]) == [
        ("embed-many", "embeddings"),
        ("embed-one", "embeddings"),
    ]
    assert page.count('<td data-label="Kind">embeddings</td>') == 2
