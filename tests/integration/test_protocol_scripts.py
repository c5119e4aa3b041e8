"""The enqueue, retry and result scripts against a real Redis: every key they touch is one
the caller named, and they keep their promises (no duplicate ids, one result per key)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from schemas.job import Job
from schemas.request import LLMRequest, RouteHop
from schemas.result import LLMResult, ResultStatus, Usage
from workers.protocol import envelope
from workers.protocol.blob import MessageBlob
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.keys import Keys
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, register

pytestmark = pytest.mark.integration
KEYS = Keys("t")


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def job(key: str, endpoint: str) -> Job:
    request = LLMRequest.model_validate(
        {"custom_id": key, "messages": [{"role": "user", "content": "hi"}]}
    )
    return Job(
        batch_id="b1", key=key, request=request, route=[RouteHop(endpoint=endpoint)], enqueued_at=0
    )


def blob_of(*jobs: Job) -> MessageBlob:
    blob = MessageBlob()
    for n, j in enumerate(jobs):
        queue, redis_id, data = envelope.encode(j, redis_id=f"{j.key}-{n}", now=0.0)
        blob.add(j.key, queue, redis_id, data)
    return blob


def test_enqueue_fills_each_named_queue_skips_duplicates_and_wakes_idle_workers(
    r: redis.Redis,
) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.wake)
    enqueue = register(r, Lua.ENQUEUE)
    blob = blob_of(job("x", "a"), job("y", "b"), job("x", "a"))
    dups = enqueue(**blob.enqueue_call(KEYS, "b1", 60))
    assert dups == [2]
    assert r.lrange(KEYS.queue("llm.a"), 0, -1) == [b"x-0"]
    assert r.lrange(KEYS.queue("llm.b"), 0, -1) == [b"y-1"]
    assert envelope.decode(r.hget(KEYS.queue_msgs("llm.b"), "y-1")).key == "y"
    assert r.hget(KEYS.batch("b1"), "total") == b"2"
    assert 0 < r.ttl(KEYS.ids("b1")) <= 60
    woken: set[bytes] = set()
    deadline = time.monotonic() + 10
    while len(woken) < 2 and time.monotonic() < deadline:
        notice = pubsub.get_message(timeout=0.5)  # None for the subscribe confirmation
        if notice is not None:
            woken.add(notice["data"])
    assert woken == {b"llm.a", b"llm.b"}
    pubsub.close()
    # No key exists that the call did not name.
    queues = [KEYS.queue(q) for q in ("llm.a", "llm.b")] + [
        KEYS.queue_msgs(q) for q in ("llm.a", "llm.b")
    ]
    assert {k.decode() for k in r.scan_iter("*")} == {KEYS.batch("b1"), KEYS.ids("b1"), *queues}


def test_a_chunks_messages_go_in_order_with_one_hset_and_rpush_per_queue_and_500(
    r: redis.Redis,
) -> None:
    enqueue = register(r, Lua.ENQUEUE)
    blob = MessageBlob()
    for i in range(1_201):  # interleaved over two queues: 601 and 600 messages
        blob.add(f"k{i}", f"llm.q{i % 2}", f"m{i}", b"data %d" % i)
    r.config_resetstat()
    assert enqueue(**blob.enqueue_call(KEYS, "b1", 60)) == []
    stats = r.info("commandstats")
    assert stats["cmdstat_hset"]["calls"] == stats["cmdstat_rpush"]["calls"] == 2 + 2
    # custom_ids are looked up and added 1,000 at a time, not with an SADD each
    assert stats["cmdstat_smismember"]["calls"] == stats["cmdstat_sadd"]["calls"] == 2
    for q in (0, 1):
        ids = [f"m{i}".encode() for i in range(q, 1_201, 2)]
        assert r.lrange(KEYS.queue(f"llm.q{q}"), 0, -1) == ids
        assert r.hmget(KEYS.queue_msgs(f"llm.q{q}"), ids) == [
            b"data %d" % i for i in range(q, 1_201, 2)
        ]


def test_duplicates_are_found_in_the_batch_and_in_the_chunk_across_lookups(
    r: redis.Redis,
) -> None:
    enqueue = register(r, Lua.ENQUEUE)
    r.sadd(KEYS.ids("b1"), "k5", "k1100")  # submitted before
    blob = MessageBlob()
    for i in range(1_200):
        blob.add(f"k{i}", "llm.q", f"m{i}", b"data %d" % i)
    for i, key in enumerate(["k3", "k1199", "new", "new"]):  # again, past the first 1,000
        blob.add(key, "llm.q", f"again{i}", b"again")
    assert enqueue(**blob.enqueue_call(KEYS, "b1", 60)) == [5, 1100, 1200, 1201, 1203]
    assert r.hget(KEYS.batch("b1"), "total") == b"1199"
    queued = r.lrange(KEYS.queue("llm.q"), 0, -1)
    assert len(queued) == 1199 and b"m5" not in queued and queued[-1] == b"again2"
    assert r.scard(KEYS.ids("b1")) == 1201


def test_a_last_chunk_seals_its_batch_unless_it_held_a_duplicate(r: redis.Redis) -> None:
    enqueue = register(r, Lua.ENQUEUE)
    r.hset(KEYS.batch("b1"), mapping={"status": "in_progress", "total": 0, "sealed": 0})
    assert enqueue(**blob_of(job("x", "a")).enqueue_call(KEYS, "b1", 60, seal_at=5.0)) == []
    assert r.hmget(KEYS.batch("b1"), "sealed", "total", "status") == [b"1", b"1", b"in_progress"]
    # A chunk with a duplicate leaves sealing to the producer, after the duplicate's result.
    r.hset(KEYS.batch("b2"), mapping={"status": "in_progress", "total": 0, "sealed": 0})
    blob = blob_of(job("x", "a"), job("x", "a"))
    assert enqueue(**blob.enqueue_call(KEYS, "b2", 60, seal_at=5.0)) == [1]
    assert r.hget(KEYS.batch("b2"), "sealed") == b"0"
    # Sealing finishes a batch whose every line already has a result.
    r.hset(KEYS.batch("b3"), mapping={"status": "in_progress", "total": 1, "failed": 1})
    r.sadd(KEYS.ids("b3"), "x")  # its one line was an error result; the chunk adds nothing
    assert enqueue(**blob_of(job("x", "a")).enqueue_call(KEYS, "b3", 60, seal_at=5.0)) == [0]
    assert r.hget(KEYS.batch("b3"), "status") == b"in_progress"  # a duplicate: not sealed
    r.hset(KEYS.batch("b4"), mapping={"status": "in_progress", "total": 1, "failed": 1})
    assert enqueue(**MessageBlob().enqueue_call(KEYS, "b4", 60, seal_at=5.0)) == []
    assert r.hmget(KEYS.batch("b4"), "status", "finished_at") == [b"completed", b"5.0"]


def test_results_of_two_batches_in_one_call_and_a_retry_of_the_failed_one(r: redis.Redis) -> None:
    write = register(r, Lua.WRITE_RESULTS)
    ok = LLMResult(custom_id="k", batch_id="b1", status="succeeded")
    bad = LLMResult(custom_id="k", batch_id="b2", status="errored")
    dead = DeadLetter.of(job("k", "a"), "errored", "server_error")
    items = [("k", ok, True, b""), ("k", bad, True, dead), ("k", ok, True, b"")]
    assert write(**write_call(KEYS, 60, items)) == [1, 1, 0]
    assert r.hmget(KEYS.batch("b1"), "completed", "total") == [b"1", b"1"]
    assert r.hmget(KEYS.batch("b2"), "failed", "n_errored") == [b"1", b"1"]
    assert r.hget(KEYS.failed("b2"), "k") == dead
    # Retrying re-enqueues the dead letter once and forgets its result.
    retry = register(r, Lua.RETRY_FAILED)
    letter = DeadLetter.parse(dead).job("b2", "k", enqueued_at=1, deadline=None, lane="", trace={})
    blob = blob_of(letter)
    assert retry(**blob.retry_call(KEYS, "b2")) == 1
    assert retry(**blob.retry_call(KEYS, "b2")) == 0
    assert r.hget(KEYS.done("b2"), "k") is None
    assert r.hmget(KEYS.batch("b2"), "failed", "n_errored") == [b"0", b"0"]
    assert r.llen(KEYS.queue("llm.a")) == 1


def test_a_calls_done_marks_are_read_and_written_once_per_batch_in_slices(r: redis.Redis) -> None:
    """One HMGET and one HSET of the done hash per batch and call, not an HSETNX and an HSET
    per result; past Lua's unpack limit (8,000 values) they go in slices of 4,000 values."""
    write = register(r, Lua.WRITE_RESULTS)
    r.hset(KEYS.done("b1"), "k7", "1-1")  # stored before
    n = 4_500
    items = [
        (f"k{i}", LLMResult(custom_id=f"k{i}", batch_id="b1", status="succeeded"), True, b"")
        for i in range(n)
    ]
    r.config_resetstat()
    replies = write(**write_call(KEYS, 60, [*items, items[0]]))  # k0 twice in the call
    stats = r.info("commandstats")
    assert replies == [int(i != 7) for i in range(n)] + [0]
    assert "cmdstat_hsetnx" not in stats
    assert stats["cmdstat_hmget"]["calls"] == 2 + 1  # 4,500 keys; and the finished check
    assert stats["cmdstat_hset"]["calls"] == 3  # 2 x 4,499 values
    assert stats["cmdstat_xadd"]["calls"] == n - 1
    marks = {k.decode(): v.decode() for k, v in r.hgetall(KEYS.done("b1")).items()}
    entries = r.xrange(KEYS.stream("b1"))
    assert {e[1][b"k"].decode(): e[0].decode() for e in entries} == {
        k: v for k, v in marks.items() if k != "k7"
    }
    assert marks["k7"] == "1-1"
    assert r.hmget(KEYS.batch("b1"), "completed", "n_succeeded", "total") == [b"4499"] * 3


def test_a_call_adds_its_results_counters_tokens_and_costs_to_each_batch(r: redis.Redis) -> None:
    """Counters are summed per batch of a call: the totals are those of the stored results,
    duplicates (in the call or stored before) adding nothing."""
    write = register(r, Lua.WRITE_RESULTS)

    def result(batch: str, status: ResultStatus, tokens: int, cost: float | None) -> LLMResult:
        usage = Usage(input_tokens=tokens, output_tokens=2 * tokens, reasoning_tokens=1)
        return LLMResult(custom_id=None, batch_id=batch, status=status, usage=usage, cost_usd=cost)

    first = [
        ("a", result("b1", "succeeded", 10, 0.25), True, b""),
        ("b", result("b1", "errored", 3, None), False, b""),
        ("a", result("b1", "succeeded", 99, 9.0), True, b""),  # a duplicate in the call
        ("c", result("b2", "expired", 0, None), True, b""),
        ("d", result("b1", "succeeded", 5, 0.5), True, b""),
    ]
    assert write(**write_call(KEYS, 60, first)) == [1, 1, 0, 1, 1]
    again = [("d", result("b1", "succeeded", 7, 1.0), True, b"")]  # stored before
    later = [("e", result("b1", "cancelled", 0, None), True, b"")]
    assert write(**write_call(KEYS, 60, again + later)) == [0, 1]
    fields = ("completed", "failed", "n_succeeded", "n_errored", "n_cancelled", "total")
    tokens = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    assert r.hmget(KEYS.batch("b1"), [*fields, *tokens]) == [
        *[b"2", b"2", b"2", b"1", b"1", b"3"],
        *[b"18", b"36", None, b"4"],
    ]
    assert float(r.hget(KEYS.batch("b1"), "cost_usd") or 0) == pytest.approx(0.75)
    assert r.hmget(KEYS.batch("b2"), "failed", "n_expired", "total", "completed") == [
        b"1",
        b"1",
        b"1",
        None,
    ]
    assert 0 < r.ttl(KEYS.batch("b1")) <= 60
