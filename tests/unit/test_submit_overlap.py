"""Submission keeps one chunk in flight while it reads and builds the next (the enqueue rate
depends on it: bench/throughput.py), and sends a short last chunk in line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest.mock import ANY

from producers.core import ClientCore, Sent
from producers.redis_ops import Eval, Join, Pipe, Spawn, cmd
from producers.submit import ChunkBuilder
from schemas.config import parse_config
from schemas.settings import Settings
from tests.conftest import openai_line
from workers.protocol.batch_record import new_record
from workers.protocol.scripts import Lua

CONFIG = parse_config({"endpoints": {"m": {"provider": "mock"}}})


def drive(lines: int, chunk: int) -> list[str]:
    """Run `submit_chunks` by hand; the log of input reads and spawned/joined/inline sends."""
    core = ClientCore("redis://127.0.0.1:1", Settings(enqueue_chunk=chunk), CONFIG)
    log: list[str] = []

    def items() -> Iterator[dict[str, object]]:
        for i in range(lines):
            log.append(f"read {i}")
            yield openai_line(f"k{i}", "hi")

    hops = core.route(None)
    builder = ChunkBuilder("batch_x", core.keys, CONFIG, hops)
    op = core.submit_chunks(builder, new_record(hops), items())
    reply: Any = None
    handles = 0
    while True:
        try:
            step = op.send(reply)
        except StopIteration:
            return log
        reply = None
        if isinstance(step, Spawn):
            step.operation.close()
            handles += 1
            log.append(f"spawn {handles}")
            reply = handles
        elif isinstance(step, Join):
            log.append(f"join {step.handle}")
            reply = Sent(chunk, 0, False)
        elif isinstance(step, Pipe):
            if any(isinstance(o, Eval) and o.script is Lua.ENQUEUE for o in step.ops):
                log.append("inline send")
            reply = [[] for _ in step.ops]


def test_a_full_chunk_is_in_flight_while_the_next_part_is_read() -> None:
    # Given 7 lines in chunks of 3 (3, 3, 1),
    log = drive(7, 3)
    # the first chunk's send is spawned before line 3 is read, the second's before line 6,
    assert log.index("spawn 1") < log.index("read 3")
    assert log.index("spawn 2") < log.index("read 6")
    # each send is joined only after the next part was read and built,
    assert log.index("read 5") < log.index("join 1") < log.index("spawn 2")
    # and the short last chunk goes in line, after the previous send is joined.
    assert log[-2:] == ["join 2", "inline send"]


def test_a_one_chunk_batch_spawns_nothing() -> None:
    assert drive(1, 1000) == ["read 0", "inline send"]


def test_a_last_full_chunk_is_joined_after_the_loop() -> None:
    log = drive(6, 3)
    assert log[-1] == "join 2" and "inline send" not in log


def test_a_short_batch_is_created_enqueued_and_sealed_in_one_round_trip() -> None:
    # A one-line batch (each gateway job) costs one round trip, not three (#15, #22):
    core = ClientCore("redis://127.0.0.1:1", Settings(enqueue_chunk=10), CONFIG)
    hops = core.route(None)

    def submit(batch_id: str, lines: list[Any]) -> Any:
        return core.submit_chunks(
            ChunkBuilder(batch_id, core.keys, CONFIG, hops), new_record(hops), lines
        )

    op = submit("b1", [openai_line("k", "hi")])
    step = op.send(None)
    assert isinstance(step, Pipe)
    names = [o.script if isinstance(o, Eval) else o.name for o in step.ops]
    # the record's writes come first, before the messages they describe,
    assert names == ["hset", "zadd", "zremrangebyscore", Lua.ENQUEUE]
    # and the last chunk's enqueue seals the batch: no SEAL of its own.
    enqueue = step.ops[-1]
    assert isinstance(enqueue, Eval) and enqueue.call["args"][1] != ""
    try:
        op.send([0, 0, 0, []])
        raise AssertionError("a SEAL round trip followed")
    except StopIteration as stop:
        assert stop.value.enqueued == 1
    # A duplicate (the enqueue then does not seal) is written, then the batch sealed.
    op = submit("b2", [openai_line("k", "hi")])
    op.send(None)
    write = op.send([0, 0, 0, [0]])
    assert isinstance(write, Eval) and write.script is Lua.WRITE_RESULTS
    seal = op.send(None)
    assert isinstance(seal, Eval) and seal.script is Lua.SEAL
    # With no line at all, the record is still created, then sealed.
    op = submit("b3", [])
    step = op.send(None)
    assert isinstance(step, Pipe) and step.ops[0] == cmd("hset", core.keys.batch("b3"), mapping=ANY)
    seal = op.send([0, 0, 0])
    assert isinstance(seal, Eval) and seal.script is Lua.SEAL
