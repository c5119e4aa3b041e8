"""The Redis protocol's codecs and scripts, without Redis: one builder per record, every key
through KEYS, and the submit path's fast envelopes equal to the canonical ones."""

from __future__ import annotations

import re
import threading

import orjson
import pytest

from schemas.batch import BatchStatus
from schemas.job import Job, Task
from schemas.request import LLMRequest, Message, RouteHop
from schemas.result import Attempt, LLMResult
from workers.protocol import envelope
from workers.protocol.batch_record import (
    WORKER_FIELDS,
    BatchNotFound,
    BatchState,
    new_record,
    parse_record,
)
from workers.protocol.blob import MessageBlob
from workers.protocol.connection import safe_url, wait_for_redis
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.envelope import BatchEnvelopes
from workers.protocol.keys import Keys
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, batch_args, source
from workers.redis_server import free_port

ROUTE = [RouteHop(endpoint="a", model="m1"), RouteHop(endpoint="b")]


def request(cid: str = "k-1", **fields: object) -> LLMRequest:
    return LLMRequest.model_validate(
        {"custom_id": cid, "messages": [Message(role="user", content="hi")], **fields}
    )


def job(**fields: object) -> Job:
    base: dict[str, object] = {
        "batch_id": "batch_1",
        "key": "k-1",
        "request": request(max_tokens=5),
        "route": ROUTE,
        "enqueued_at": 123.5,
        "trace": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"},
    }
    return Job.model_validate({**base, **fields})


# --- scripts ------------------------------------------------------------------------------


@pytest.mark.parametrize("script", list(Lua))
def test_every_key_a_script_touches_comes_through_keys(script: Lua) -> None:
    text = source(script)
    assert "-- include:" not in text  # every include was expanded
    # The first argument of every command (the key, or publish's channel) is never built by
    # concatenation nor read from ARGV.
    for call in re.finditer(r"redis\.call\('(\w+)',\s*([^,)]+)", text):
        command, first = call.groups()
        assert ".." not in first, f"{script}: {command} on a built key: {first}"
        assert "ARGV" not in first, f"{script}: {command} on a key from ARGV: {first}"


@pytest.mark.parametrize("script", list(Lua))
def test_every_script_documents_its_keys_and_argv(script: Lua) -> None:
    header = source(script).split("\n\n", 1)[0]
    assert "KEYS:" in header and ("ARGV:" in header or script is Lua.LIMIT_PAUSE)


# --- envelope -----------------------------------------------------------------------------


def test_a_batched_call_writes_each_run_s_keys_once_in_a_head_line_with_its_length() -> None:
    # Given a turn's calls for scopes a, a (an equal tuple, not the same one), b, then a again,
    a, b = ("a1", "a2"), ("b1",)
    calls = [(a, "1 x "), (tuple(list(a)), "2 y "), (b, "3 "), (a, " ")]
    # each run of calls with the same keys has one head line (its first key's index in KEYS,
    # its key count, its number of calls), each distinct tuple of keys goes once, and every
    # call's words (an empty word included) are a line of their own.
    assert batch_args(calls) == {
        "keys": ["a1", "a2", "b1"],
        "args": ["0 2 2\n1 x \n2 y \n2 1 1\n3 \n0 2 1\n \n"],
    }


def test_an_envelope_carries_its_job_to_the_queue_and_actor_of_its_hop_and_lane() -> None:
    original = job(lane="@high", hop=1, attempts=[Attempt(endpoint="a", error="timeout")])
    queue, redis_id, data = envelope.encode(original, redis_id="r" * 32, now=10.0)
    message = orjson.loads(data)
    assert queue == message["queue_name"] == "llm.b@high"
    assert message["actor_name"] == "batchyard.execute.high"
    assert message["options"] == {"redis_message_id": redis_id} and redis_id == "r" * 32
    assert message["message_timestamp"] == 10_000
    assert envelope.decode(data) == original


def test_a_delayed_envelope_goes_to_the_delay_queue_with_its_eta() -> None:
    queue, _, data = envelope.encode(job(), redis_id="x", now=10.0, delay_ms=2500)
    message = orjson.loads(data)
    assert queue == message["queue_name"] == "llm.a.DQ"
    assert message["options"]["eta"] == 12_500


@pytest.mark.parametrize(
    ("deadline", "task", "lane", "own_route"),
    [
        (None, None, "", False),
        (99.0, Task(kind="gmn", max_rounds=3, data={"x": [1]}), "@2", False),
        (None, None, "@low", True),
    ],
)
def test_batch_envelopes_equal_the_canonical_encoding(
    deadline: float | None, task: Task | None, lane: str, own_route: bool
) -> None:
    route = [RouteHop(endpoint="b", tier="advanced")] if own_route else None
    req = request(route=route) if route else request(max_tokens=5)
    fast = BatchEnvelopes("batch_1", ROUTE, deadline=deadline, task=task, lane=lane)
    trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}
    got = fast.encode("k-1", req, trace, "r" * 32, 123.5, route=route)
    expected = job(
        request=req, route=route or ROUTE, deadline=deadline, task=task, lane=lane, trace=trace
    )
    canonical = envelope.encode(expected, redis_id="r" * 32, now=123.5)
    assert (got.queue, got.redis_id) == (canonical.queue, canonical.redis_id)
    assert orjson.loads(got.data) == orjson.loads(canonical.data)
    assert envelope.decode(got.data) == expected


@pytest.mark.parametrize(
    ("deadline", "task", "lane", "kind"),
    [
        (None, None, "", "chat"),
        (99.0, Task(kind="gmn", max_rounds=3, data={"x": [1]}), "@2", "chat"),
        (None, None, "@low", "embeddings"),
        (None, None, "@1", "responses"),
    ],
)
def test_a_chunk_s_plain_messages_are_the_canonical_ones(
    deadline: float | None, task: Task | None, lane: str, kind: str
) -> None:
    body = {"model": "m", "input": ["a", '\u00e9"\n'], "messages": [{"role": "user"}], "n": 1.5}
    req = LLMRequest.model_validate({"custom_id": 'k-"1\u00e9', "kind": kind, "body": body})
    envelopes = BatchEnvelopes("batch_1", ROUTE, deadline=deadline, task=task, lane=lane)
    redis_id = "0123456789abcdef" * 2
    got = envelopes.plain_writer(1796558475.225884)(req.custom_id, kind, body, redis_id)
    expected = job(
        key=req.custom_id,
        request=req,
        deadline=deadline,
        task=task,
        lane=lane,
        enqueued_at=1796558475.225884,
        trace={"traceparent": f"00-{redis_id}-{redis_id[8:24]}-00"},
    )
    canonical = envelope.encode(expected, redis_id=redis_id, now=1796558475.225884)
    assert orjson.loads(got) == orjson.loads(canonical.data)
    assert envelope.decode(got) == expected


@pytest.mark.parametrize(
    "req",
    [
        LLMRequest(custom_id="e-1", kind="embeddings", body={"model": "e", "input": ["a"]}),
        # Values orjson does not encode go through pydantic's serializer, as before.
        LLMRequest(custom_id="b-1", body={"messages": [], "raw": b"bytes", "ids": {1, 2}}),
        LLMRequest(custom_id="t-1", tier="basic", body={"messages": []}),
    ],
)
def test_batch_envelopes_write_every_request_as_pydantic_does(req: LLMRequest) -> None:
    fast = BatchEnvelopes("batch_1", ROUTE)
    got = fast.encode(req.custom_id, req, {}, "r" * 32, 1.0)
    expected = orjson.loads(LLMRequest.__pydantic_serializer__.to_json(req, exclude_defaults=True))
    assert orjson.loads(got.data)["args"][0]["request"] == expected
    assert envelope.decode(got.data).request == LLMRequest.model_validate(expected)


# --- dead letter --------------------------------------------------------------------------


def test_a_dead_letter_runs_its_request_again_from_the_first_hop() -> None:
    failed = job(hop=1, attempts=[Attempt(endpoint="a", error="timeout")], task=Task(kind="t"))
    raw = DeadLetter.of(failed, "errored", "server_error")
    assert orjson.loads(raw)["status"] == "errored"  # what retry_failed.lua reads
    assert DeadLetter.code_of(raw) == "server_error"
    letter = DeadLetter.parse(raw)
    again = letter.job("batch_1", "k-1", enqueued_at=5.0, deadline=None, lane="@1", trace={})
    assert (again.hop, again.attempts, again.lane) == (0, [], "@1")
    assert (again.request, again.route, again.task) == (failed.request, ROUTE, Task(kind="t"))


def test_dead_letters_written_before_the_codec_still_parse() -> None:
    legacy = orjson.dumps(
        {
            "status": "expired",
            "code": "expired",
            "request": {"custom_id": "x", "messages": [{"role": "user", "content": "hi"}]},
            "route": [{"endpoint": "a"}],
            "task": None,
        }
    )
    letter = DeadLetter.parse(legacy)
    assert (letter.code, letter.route[0].endpoint, letter.task) == ("expired", "a", None)


# --- batch record -------------------------------------------------------------------------


def test_a_new_batch_record_reads_back_as_a_batch() -> None:
    record = new_record(ROUTE, deadline=50.0, lane="@low", metadata={"a": "b"}, budget_usd=2.5)
    raw = {
        k.encode(): str(v).encode() if not isinstance(v, bytes) else v for k, v in record.items()
    }
    batch = parse_record("batch_1", raw)
    assert batch.status is BatchStatus.in_progress and batch.priority == "low"
    assert (batch.metadata, batch.budget_usd, batch.sealed) == ({"a": "b"}, 2.5, False)
    with pytest.raises(BatchNotFound, match="batch_2"):
        parse_record("batch_2", {})


def test_the_worker_view_of_a_batch() -> None:
    assert WORKER_FIELDS == ("status", "cost_usd", "budget_usd")
    assert BatchState.parse([b"cancelling", b"1.5", None]) == BatchState("cancelling", 1.5, None)
    assert BatchState.parse([None, None, None]) == BatchState("", 0.0, None)


# --- blobs --------------------------------------------------------------------------------


def test_a_message_blob_names_each_queue_once_through_keys() -> None:
    blob, keys = MessageBlob(), Keys("ns")
    blob.add("k1", "llm.a", "r1", b"{}")
    blob.add("k2", "llm.b@1", "r2", b"{}")
    blob.add("k3", "llm.a", "r3", b"{}")
    call = blob.enqueue_call(keys, "b1", 60)
    assert call["keys"] == [
        "ns:batch:b1",
        "ns:batch:b1:ids",
        "ns:dq:__wake__",
        "ns:dq:llm.a",
        "ns:dq:llm.a.msgs",
        "ns:dq:llm.b@1",
        "ns:dq:llm.b@1.msgs",
    ]
    assert call["args"][:2] == [60, ""] and call["args"][3:] == ["llm.a", "llm.b@1"]
    assert blob.fields()[1::4] == [b"0", b"1", b"0"]
    retry = blob.retry_call(keys, "b1")
    assert retry["keys"][:4] == ["ns:batch:b1", "ns:batch:b1:done", "ns:batch:b1:failed", keys.wake]


def test_result_writes_name_each_batch_s_keys_once() -> None:
    results = [
        LLMResult(custom_id=c, batch_id=b, status="succeeded") for c, b in [("1", "x"), ("2", "y")]
    ]
    call = write_call(
        Keys("ns"), 60, [(r.custom_id or "", r, False, b"") for r in [*results, results[0]]]
    )
    assert call["keys"] == [*Keys("ns").results("x"), *Keys("ns").results("y")]
    fields = bytes(call["args"][2]).split(b"\0")[:-1]  # type: ignore[arg-type]
    assert fields[0::5] == [b"0", b"1", b"0"]  # 5 fields a result (write_call)


# --- connection ---------------------------------------------------------------------------


def test_safe_url_hides_the_password_only() -> None:
    assert safe_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert safe_url("redis://:secret@h:1/0") == "redis://:***@h:1/0"
    assert safe_url("redis://h:1/0") == "redis://h:1/0"


def test_wait_for_redis_gives_up_with_one_clear_error() -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1.*unreachable for 1s") as info:
        wait_for_redis(url, give_up_s=1.0)
    assert "secret" not in str(info.value) and info.value.__cause__ is None


def test_wait_for_redis_returns_when_asked_to_stop() -> None:
    stop = threading.Event()
    stop.set()
    wait_for_redis(f"redis://127.0.0.1:{free_port()}/0", give_up_s=3600, stop=stop)
