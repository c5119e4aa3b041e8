"""Producer-built messages are real dramatiq messages the execute actor can run (StubBroker)."""

from __future__ import annotations

from typing import Any

import dramatiq
import orjson
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from producers.submit import ChunkBuilder, numbered
from schemas.config import parse_config
from schemas.job import Job
from tests.conftest import openai_line
from workers import encoder
from workers.protocol.keys import Keys
from workers.protocol.lanes import (
    EXECUTE_ACTOR,
    FAIR_LANES,
    LANES,
    Priority,
    actor_for,
    endpoint_queues,
    pick_lane,
    queue_name,
)

CONFIG = parse_config(
    {
        "endpoints": {"a": {"provider": "mock"}, "b": {"provider": "mock"}},
        "routes": {"default": ["a", "b"]},
    }
)


def test_chunk_messages_decode_and_run_on_a_stub_broker() -> None:
    encoder.install()
    broker = StubBroker()
    seen: list[Job] = []

    def execute(payload: dict[str, Any]) -> None:
        seen.append(Job.model_validate(payload))

    dramatiq.Actor(
        execute, broker=broker, actor_name=EXECUTE_ACTOR, queue_name="llm.a", priority=0, options={}
    )
    lines = [orjson.dumps(openai_line(f"id-{i}", f"text {i}")) for i in range(3)]
    chunk = ChunkBuilder("batch_x", Keys(), CONFIG).build(list(numbered(lines)))
    assert not chunk.errors
    # The enqueue blob holds fours: custom_id, queue index, redis message id, encoded message.
    fields = chunk.blob.fields()
    assert len(fields) == 12
    assert chunk.blob.queues == {"llm.a": b"0"}
    for i in range(0, len(fields), 4):
        custom_id, queue, _rid, data = (f.decode() for f in fields[i : i + 4])
        message = Message.decode(data.encode())
        assert message.queue_name == "llm.a" and queue == "0"
        assert message.args[0]["key"] == custom_id
        broker.enqueue(message)
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    try:
        broker.join("llm.a", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert sorted(j.key for j in seen) == ["id-0", "id-1", "id-2"]
    assert all([h.endpoint for h in j.route] == ["a", "b"] and j.hop == 0 for j in seen)


def test_bad_lines_and_unknown_route_endpoints_become_line_errors() -> None:
    lines = [
        b"nope",
        orjson.dumps(
            {
                **openai_line("r", "x"),
                "body": {
                    "messages": [{"role": "user", "content": "x"}],
                    "route": [{"endpoint": "zzz"}],
                },
            }
        ),
    ]
    chunk = ChunkBuilder("batch_x", Keys(), CONFIG).build(list(numbered(lines)))
    assert not chunk.blob
    messages = [r.error.message for _, r in chunk.errors if r.error]
    assert messages[0].startswith("line 1: not valid JSON")
    assert messages[1] == "line 2: body.route.0.endpoint: unknown endpoint 'zzz' (known: a, b)"
    assert [k for k, _ in chunk.errors] == ["#line:1", "#line:2"]


def test_blank_lines_are_skipped_but_numbering_follows_the_file() -> None:
    assert [n for n, _ in numbered([b"a\n", b"\n", b"  \n", b"b\n"])] == [1, 4]


def test_a_lane_picks_queue_actor_and_stays_on_the_job() -> None:
    lines = [orjson.dumps(openai_line("id-0", "text"))]
    chunk = ChunkBuilder("batch_x", Keys(), CONFIG, lane="@high").build(list(numbered(lines)))
    _cid, _queue, _rid, data = chunk.blob.fields()
    message = Message.decode(data)
    assert list(chunk.blob.queues) == ["llm.a@high"] and message.queue_name == "llm.a@high"
    assert message.actor_name == actor_for("@high") == "batchyard.execute.high"
    # The lane travels with the job, so failover hops and retries stay on it.
    assert Job.model_validate(message.args[0]).lane == "@high"


@pytest.mark.parametrize(
    ("priority", "depths", "turn", "lane"),
    [
        ("high", [], 0, "@high"),
        ("low", [], 5, "@low"),
        # the emptiest normal lane wins,
        ("normal", [9, 0, 5, 5], 0, "@1"),
        # ties go round-robin from `turn`, so back-to-back batches get different lanes.
        ("normal", [0, 0, 0, 0], 0, ""),
        ("normal", [0, 0, 0, 0], 1, "@1"),
        ("normal", [0, 0, 0, 0], 6, "@2"),
        ("normal", [3, 7, 3, 3], 1, "@2"),
    ],
)
def test_pick_lane(priority: Priority, depths: list[int], turn: int, lane: str) -> None:
    assert pick_lane(priority, depths, turn) == lane


def test_every_lane_is_a_valid_job_lane_and_a_distinct_queue() -> None:
    queues = endpoint_queues("a")
    assert len(set(queues)) == len(LANES) == FAIR_LANES + 2
    assert queues[1] == queue_name("a") == "llm.a"
    for lane in LANES:
        assert Job.model_validate({**JOB, "lane": lane}).lane == lane
    with pytest.raises(ValueError, match="lane"):
        Job.model_validate({**JOB, "lane": "x"})


JOB: dict[str, Any] = {
    "batch_id": "b",
    "key": "k",
    "request": {
        "custom_id": "k",
        "body": {"messages": [{"role": "user", "content": "hi"}], "model": "m"},
    },
    "route": [{"endpoint": "a"}],
    "enqueued_at": 0.0,
}
