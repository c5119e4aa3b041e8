"""A chunk's plain lines go the short way (`plain_line`, `plain_writer`): the chunk is the one
the long way (a request model per line) builds from the same lines."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from producers import submit
from producers.submit import Chunk, ChunkBuilder, Item
from schemas.config import parse_config
from schemas.job import Task
from tests.conftest import openai_line
from workers.protocol.keys import Keys

CONFIG = parse_config({"endpoints": {"m": {"provider": "mock"}, "n": {"provider": "mock"}}})
SCHEMA = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
LINES: list[dict[str, Any]] = [
    openai_line("a", "hi"),
    openai_line("b", "hi", max_tokens=4, temperature=0.5),
    {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": ["x"]}},
    openai_line("s", "hi", response_format=SCHEMA),  # structured: the long way
    openai_line("t", "hi", tier="advanced", route=[{"endpoint": "n"}]),  # the long way
    openai_line("bad", "hi", stream=True),  # an error either way
    openai_line("a", "again"),  # a duplicate is found by the enqueue, not here
    {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": []},
]


def build(
    items: list[Item],
    task: Task | None,
    monkeypatch: pytest.MonkeyPatch,
    *,
    tracing: bool = False,
) -> tuple[Chunk, list[int]]:
    """The chunk of `items`, and the numbers of the lines that went the long way. Tracing is
    set here, not left to the process: an earlier test may have installed a tracer provider
    (OpenTelemetry's global is set once per process)."""
    monkeypatch.setattr(submit, "chunk_prefix", lambda: "f" * 24)
    monkeypatch.setattr(submit, "trace_enabled", lambda: tracing)
    builder = ChunkBuilder("batch_1", Keys("by"), CONFIG, task=task, lane="@1")
    long_way = builder._request
    seen: list[int] = []

    def counted(item: Item, number: int) -> Any:
        seen.append(number)
        return long_way(item, number)

    monkeypatch.setattr(builder, "_request", counted)
    return builder.build(list(enumerate(items, start=1))), seen


def fields(chunk: Chunk) -> list[Any]:
    """The blob's fields, each message decoded, less the times the two builds were made at."""
    out: list[Any] = []
    for i, field in enumerate(chunk.blob.fields()):
        if i % 4 == 3:
            message = orjson.loads(field)
            message.pop("message_timestamp")
            message["args"][0].pop("enqueued_at")
            out.append(message)
        else:
            out.append(field)
    return out


@pytest.mark.parametrize("task", [None, Task(kind="gmn", max_rounds=2, data={"k": 1})])
def test_plain_lines_make_the_chunk_the_long_way_makes(
    task: Task | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    short, short_way = build([orjson.dumps(obj) for obj in LINES], task, monkeypatch)
    long, long_way = build([dict(obj) for obj in LINES], task, monkeypatch)
    assert fields(short) == fields(long)
    assert short.blob.queues == long.blob.queues
    assert short.enqueued_lines == long.enqueued_lines == [1, 2, 3, 4, 5, 7]
    assert short.enqueued_ids == long.enqueued_ids
    assert [(k, r.error) for k, r in short.errors] == [(k, r.error) for k, r in long.errors]
    assert len(short.errors) == 2
    # the structured line (unless the batch's task decides), the extended and the bad ones
    assert short_way == ([4] if task is None else []) + [5, 6, 8]
    assert long_way == list(range(1, 9))


def test_with_tracing_on_every_line_goes_the_long_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A traced batch's messages carry their trace context, which only the long way adds."""
    chunk, long_way = build([orjson.dumps(obj) for obj in LINES], None, monkeypatch, tracing=True)
    assert long_way == list(range(1, 9))
    messages = [f for i, f in enumerate(fields(chunk)) if i % 4 == 3]
    assert messages and all("trace" in m["args"][0] for m in messages)
