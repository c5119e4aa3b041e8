"""One test per dramatiq hook batchyard relies on (workers/dramatiq_ext/HOOKS.md).

Each fails with a message naming the hook and what to re-check when a dramatiq upgrade
changes it: first the source digests of everything copied or relied on, then the behaviour
each hook is relied on for, against dramatiq itself (and a real Redis where it matters).
Private dramatiq names are reached through `upstream.resolve`, never imported.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import PriorityQueue
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import compute_backoff, dq_name
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries, SkipMessage

from schemas.settings import Settings
from workers.broker import build_broker
from workers.dramatiq_ext import AckBatcher, Dispatch, LaneBroker, LoopWorker, WaitForRedis
from workers.dramatiq_ext import dispatch as dispatch_mod
from workers.dramatiq_ext.acks import ACK_MANY
from workers.dramatiq_ext.broker import implements
from workers.dramatiq_ext.middleware import AsyncIOLoop, new_event_loop
from workers.dramatiq_ext.upstream import HOOKS, READ_FROM, Hook, digest, resolve, upstream_source
from workers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
FENCE = ROOT / "workers" / "dramatiq_ext"


def hook(upstream: str) -> Hook:
    return next(h for h in HOOKS if h.upstream == upstream)


def changed(upstream: str, detail: str) -> str:
    """The failure message of a hook whose behaviour differs from what batchyard relies on."""
    h = hook(upstream)
    return (
        f"dramatiq hook {h.upstream!r} no longer behaves as in dramatiq {READ_FROM}: {detail}. "
        f"{h.ours} relies on it ({h.why}); see workers/dramatiq_ext/HOOKS.md"
    )


@pytest.fixture
def ns_broker(redis_server: RedisServer) -> Iterator[RedisBroker]:
    """A plain dramatiq RedisBroker on a private Redis (no batchyard subclass)."""
    broker = RedisBroker(url=redis_server.url, namespace="hk", heartbeat_timeout=60_000)
    yield broker
    broker.client.close()


# --- source digests -----------------------------------------------------------------------


@pytest.mark.parametrize("h", HOOKS, ids=[h.upstream for h in HOOKS])
def test_upstream_source_is_the_one_the_fence_was_written_against(h: Hook) -> None:
    now = digest(h.upstream)
    todo = (
        f"{h.ours} is a modified copy of it: diff upstream's change and port it into the copy"
        if h.kind == "copy"
        else f"{h.ours} relies on it: re-check that {h.why}"
    )
    assert now == h.digest, (
        f"dramatiq hook changed: {h.upstream} differs from dramatiq {READ_FROM} "
        f"(digest {h.digest} -> {now}, installed dramatiq {dramatiq.__version__}). {todo}. "
        "Then record the new digest (python -m workers.dramatiq_ext.upstream) and update "
        "workers/dramatiq_ext/HOOKS.md."
    )


def test_every_hook_is_documented_and_points_at_real_code() -> None:
    doc = (FENCE / "HOOKS.md").read_text()
    assert f"dramatiq {READ_FROM}" in doc, "HOOKS.md must name the version upstream.py records"
    for h in HOOKS:
        short = h.upstream.removeprefix("dramatiq.")
        assert short in doc, f"{h.upstream} is in upstream.HOOKS but not in HOOKS.md"
        for target in h.ours.split(", "):
            if target.endswith(".lua"):
                assert (ROOT / target).is_file(), f"{h.upstream}: {target} does not exist"
            else:
                resolve(target)  # AttributeError / ImportError names the stale reference


# --- the fence itself -----------------------------------------------------------------------

#: Private dramatiq names (and dispatch-script plumbing) only the fence may touch.
PRIVATE = {
    "_RedisConsumer",
    "_WorkQueueItem",
    "_max_unpack_size",
    "_dispatch",
    "_add_worker",
    "_add_consumer",
    "_scripts",
    "_should_do_maintenance",
    "scripts",
}


def test_nothing_outside_the_fence_touches_dramatiq_internals() -> None:
    offenders = []
    for package in ("schemas", "providers", "workers", "producers", "batchyard"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if FENCE in path.parents:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dramatiq"):
                    offenders += [
                        f"{where} imports {a.name}" for a in node.names if a.name[0] == "_"
                    ]
                elif isinstance(node, ast.Attribute) and (
                    node.attr in PRIVATE or node.attr.startswith("do_")
                ):
                    offenders.append(f"{where} uses .{node.attr}")
                elif isinstance(node, ast.Assign | ast.AugAssign):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    offenders += [
                        f"{where} assigns .broker_id"
                        for t in targets
                        if isinstance(t, ast.Attribute) and t.attr == "broker_id"
                    ]
    assert not offenders, (
        "dramatiq internals used outside workers/dramatiq_ext (move the code into the fence, "
        "list the hook in HOOKS.md and upstream.HOOKS, and test it here):\n" + "\n".join(offenders)
    )


# --- dispatch.lua: ARGV order, commands, key layout ----------------------------------------


def test_dispatch_argv_order_and_commands_are_the_ones_dispatch_wraps() -> None:
    source = upstream_source("dramatiq.brokers.redis:dispatch.lua")
    declared = dict(
        (int(n), name) for name, n in re.findall(r"^local (\w+) = ARGV\[(\d+)\]", source, re.M)
    )
    order = tuple(declared[i] for i in sorted(declared))
    assert order == dispatch_mod.ARGV, changed(
        "dramatiq.brokers.redis:dispatch.lua",
        f"its ARGV is {order}, dispatch.ARGV says {dispatch_mod.ARGV}",
    )
    commands = set(re.findall(r'command == "(\w+)"', source))
    missing = set(dispatch_mod.COMMANDS) - commands
    assert not missing, changed(
        "dramatiq.brokers.redis:dispatch.lua", f"commands {missing} are gone (it has {commands})"
    )
    enqueue = source.split('command == "enqueue"')[1].split("elseif")[0]
    assert "message_id = ARGS[1]" in enqueue and "message_data = ARGS[2]" in enqueue, changed(
        "dramatiq.brokers.redis:dispatch.lua", "enqueue no longer takes (message_id, message_data)"
    )


def test_dispatch_builds_the_argv_dramatiq_builds(ns_broker: RedisBroker) -> None:
    ours = dispatch_mod.argv(ns_broker, "qsize", "q", "extra")
    sent: list[list[Any]] = []
    ns_broker.scripts["dispatch"] = lambda *, args, keys: sent.append(args)
    ns_broker.do_qsize("q", "extra")
    theirs = sent[0]
    assert [ours[0], *ours[2:6], *ours[7:]] == [theirs[0], *theirs[2:6], *theirs[7:]], changed(
        "dramatiq.brokers.redis:RedisBroker._dispatch", f"it sends {theirs}, we send {ours}"
    )
    assert isinstance(theirs[1], int) and abs(theirs[1] - ours[1]) < 60_000, changed(
        "dramatiq.brokers.redis:RedisBroker._dispatch", "ARGV[2] is no longer a ms timestamp"
    )


def test_dispatch_enqueue_is_what_dramatiqs_consumer_fetches(ns_broker: RedisBroker) -> None:
    dispatch = Dispatch(ns_broker)
    message = Message("q", "a", ({"i": 1},), {}, {"redis_message_id": "rid-1"})
    dispatch.enqueue("q", "rid-1", message.encode())
    assert dispatch.qsize("q") == 1, changed(
        "dramatiq.brokers.redis:dispatch.lua", "qsize does not count an enqueued message"
    )
    fetched = next(ns_broker.consume("q", prefetch=1, timeout=100))
    assert fetched is not None and fetched.message_id == message.message_id, changed(
        "dramatiq.brokers.redis:dispatch.lua", "a message from Dispatch.enqueue is not fetched"
    )


def test_key_layout_is_where_dramatiq_keeps_messages_and_acks(ns_broker: RedisBroker) -> None:
    client: redis.Redis = ns_broker.client
    ns_broker.enqueue(Message("q", "a", (), {}, {}))
    rid = next(iter(client.hkeys(dispatch_mod.msgs_key("hk", "q")))).decode()
    assert client.lrange(dispatch_mod.queue_key("hk", "q"), 0, -1) == [rid.encode()], changed(
        "dramatiq.brokers.redis:dispatch.lua", "queued ids are not in dispatch.queue_key"
    )
    consumer = ns_broker.consume("q", prefetch=1, timeout=100)
    assert next(consumer) is not None
    owner = ns_broker.broker_id
    assert client.sismember(dispatch_mod.acks_key("hk", owner, "q"), rid), changed(
        "dramatiq.brokers.redis:dispatch.lua", "a fetched id is not in dispatch.acks_key"
    )
    assert client.zscore(dispatch_mod.heartbeats_key("hk"), owner) is not None, changed(
        "dramatiq.brokers.redis:dispatch.lua", "heartbeats are not in dispatch.heartbeats_key"
    )


def test_protocol_names_match_dramatiqs_layout() -> None:
    """The producers' enqueue script writes into dramatiq's keys by the protocol's names."""
    from workers.protocol.keys import Keys
    from workers.protocol.lanes import delay_queue

    keys = Keys("ns")
    assert keys.queue("q") == dispatch_mod.queue_key(keys.dramatiq_ns, "q"), changed(
        "dramatiq.brokers.redis:dispatch.lua", "workers.protocol Keys.queue is not dramatiq's"
    )
    assert keys.queue_msgs("q") == dispatch_mod.msgs_key(keys.dramatiq_ns, "q"), changed(
        "dramatiq.brokers.redis:dispatch.lua", "workers.protocol Keys.queue_msgs is not dramatiq's"
    )
    assert delay_queue("llm.x") == dq_name("llm.x"), changed(
        "dramatiq.common:dq_name", "workers.protocol.lanes.delay_queue differs from it"
    )


def test_ack_many_acks_each_message_in_the_set_it_was_fetched_into(
    ns_broker: RedisBroker,
) -> None:
    client: redis.Redis = ns_broker.client
    for i in range(5):
        ns_broker.enqueue(Message("q", "a", ({"i": i},), {}, {}))
    consumer = ns_broker.consume("q", prefetch=3, timeout=100)
    fetched = [next(consumer) for _ in range(3)]
    first_owner = ns_broker.broker_id
    ns_broker.broker_id = "renewed"  # what Heartbeat does after a Redis restart
    later = ns_broker.consume("q", prefetch=1, timeout=100)
    second = next(later)
    (requeued,) = ns_broker.do_fetch("q", 1)  # its id is then taken out of the ack set,
    rid = Message.decode(requeued).options["redis_message_id"]
    client.srem(dispatch_mod.acks_key("hk", "renewed", "q"), rid)  # as maintenance does
    acks = AckBatcher(ns_broker)
    with acks.group():  # one call: two ack sets, and an id in neither
        for m in fetched:
            assert m is not None
            acks.add(first_owner, "q", m.options["redis_message_id"])
        assert second is not None
        acks.add("renewed", "q", second.options["redis_message_id"])
        acks.add("renewed", "q", rid)
    assert acks.flush(10)
    acks.close()
    assert acks.calls == 1
    for owner in (first_owner, "renewed"):
        assert client.scard(dispatch_mod.acks_key("hk", owner, "q")) == 0, changed(
            "dramatiq.brokers.redis:dispatch.lua", "ack_many.lua left ids in the fetch-time ack set"
        )
    assert client.hkeys(dispatch_mod.msgs_key("hk", "q")) == [rid.encode()], changed(
        "dramatiq.brokers.redis:dispatch.lua",
        "ack_many.lua left acked messages stored, or deleted one no ack set held",
    )
    assert client.zscore(dispatch_mod.heartbeats_key("hk"), "renewed") is not None


def test_ack_many_sends_one_command_of_each_kind_per_ack_set(ns_broker: RedisBroker) -> None:
    """One SMISMEMBER, one SREM and one HDEL per ack set and call, not an SREM per message
    (#22); an id acked twice in one call is acked once."""
    client: redis.Redis = ns_broker.client
    for i in range(50):
        ns_broker.enqueue(Message("q", "a", ({"i": i},), {}, {}))
    consumer = ns_broker.consume("q", prefetch=50, timeout=100)
    rids = [m.options["redis_message_id"] for m in (next(consumer) for _ in range(50)) if m]
    keys = [
        dispatch_mod.heartbeats_key("hk"),
        dispatch_mod.acks_key("hk", ns_broker.broker_id, "q"),
        dispatch_mod.msgs_key("hk", "q"),
    ]
    client.config_resetstat()
    script = client.register_script(ACK_MANY)
    assert script(keys=keys, args=[1, ns_broker.broker_id, 51, *rids, rids[0]]) == 50
    stats = client.info("commandstats")
    assert [stats[f"cmdstat_{c}"]["calls"] for c in ("smismember", "srem", "hdel")] == [1, 1, 1]
    assert client.scard(keys[1]) == 0
    assert client.hlen(keys[2]) == 0


def fill(client: redis.Redis, ns: str, ids: list[str]) -> None:
    """The same queue in namespace `ns`: ids queued in order, each with its data but the last
    (an id whose data is gone: dispatch.lua answers nil for it, dramatiq #266)."""
    for rid in ids:
        client.rpush(dispatch_mod.queue_key(ns, "q"), rid)
    for rid in ids[:-1]:
        client.hset(dispatch_mod.msgs_key(ns, "q"), rid, f"data of {rid}")


def state(client: redis.Redis, ns: str, worker: str) -> tuple[object, ...]:
    return (
        client.lrange(dispatch_mod.queue_key(ns, "q"), 0, -1),
        client.smembers(dispatch_mod.acks_key(ns, worker, "q")),
        client.hgetall(dispatch_mod.msgs_key(ns, "q")),
        client.zscore(dispatch_mod.heartbeats_key(ns), worker) is not None,
    )


def test_fetch_many_leaves_what_dispatch_fetch_leaves(redis_server: RedisServer) -> None:
    """fetch_many.lua against dispatch.lua's `fetch` on identical queues: same answers, same
    queue, ack set, stored messages and heartbeat after each call (empty queue included, and
    a call after Redis lost its scripts)."""
    client = redis.Redis.from_url(redis_server.url)
    ids = [f"rid-{i}" for i in range(7)]
    theirs = RedisBroker(url=redis_server.url, namespace="a", maintenance_chance=0)
    ours = RedisBroker(url=redis_server.url, namespace="b", maintenance_chance=0)
    fill(client, "a", ids)
    fill(client, "b", ids)
    fetch = dispatch_mod.Fetch(ours, "q")
    for n in (3, 1, 5, 2):  # the last two run past the end of the queue, then on an empty one
        if n == 5:
            client.script_flush()  # as after a Redis restart: both load their script again
        expected = theirs.do_fetch("q", n)
        got = fetch(ours.broker_id, n)
        assert got == expected, changed(
            "dramatiq.brokers.redis:dispatch.lua", f"fetch of {n} gave {expected}, ours {got}"
        )
        assert state(client, "b", ours.broker_id) == state(client, "a", theirs.broker_id), changed(
            "dramatiq.brokers.redis:dispatch.lua", f"a fetch of {n} left other keys than ours"
        )
    for broker in (theirs, ours):
        broker.client.close()
    client.close()


def test_a_fetch_that_draws_maintenance_runs_dramatiqs_with_it(ns_broker: RedisBroker) -> None:
    client: redis.Redis = ns_broker.client
    ns_broker.enqueue(Message("q", "a", (), {}, {}))
    fetch = dispatch_mod.Fetch(ns_broker, "q")
    (held,) = fetch("dead", 1)
    client.zadd(dispatch_mod.heartbeats_key("hk"), {"dead": 0})  # silent since the epoch
    ns_broker.maintenance_chance = 0
    assert fetch("alive", 1) == []
    ns_broker.maintenance_chance = 1_000_000  # every call draws maintenance
    assert fetch("alive", 1) == [held], changed(
        "dramatiq.brokers.redis:RedisBroker._should_do_maintenance",
        "a draw of 1 did not send the fetch through dispatch.lua with maintenance",
    )
    assert client.smembers(dispatch_mod.acks_key("hk", "alive", "q")) == {
        next(iter(client.hkeys(dispatch_mod.msgs_key("hk", "q"))))
    }


def test_a_consumer_decodes_each_message_once_and_hands_on_their_jobs(
    redis_server: RedisServer,
) -> None:
    broker = build_broker(Settings(redis_url=redis_server.url))
    seen: list[list[Any]] = []
    broker.on_fetch = seen.append
    for i in range(3):
        broker.enqueue(Message("q", "a", ({"i": i},), {}, {}))
    broker.do_enqueue("q", "bad", b"not json")  # dramatiq's own enqueue of broken data
    consumer = broker.consume("q", prefetch=10, timeout=100)
    got = [next(consumer) for _ in range(3)]
    assert [m.args[0] for m in got if m is not None] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert seen == [[{"i": 0}, {"i": 1}, {"i": 2}]]
    with pytest.raises(DecodeError):  # at its turn, as dramatiq's consumer raises it
        next(consumer)
    broker.close()


def test_a_fetched_messages_fields_are_read_without_the_proxys_getattr(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dramatiq's proxy reaches every field through `__getattr__` (~12 reads per message,
    each after a failed look-up); a fetched message holds them, equal to its message's."""
    broker = build_broker(Settings(redis_url=redis_server.url))
    broker.enqueue(Message("q", "a", ({"i": 1},), {"k": 2}, {"o": 3}))
    consumer = broker.consume("q", prefetch=10, timeout=100)
    got = next(consumer)
    broker.close()
    assert got is not None and isinstance(got, MessageProxy)
    reached: list[str] = []
    original = MessageProxy.__getattr__

    def counted(self: MessageProxy, name: str) -> Any:
        reached.append(name)
        return original(self, name)

    monkeypatch.setattr(MessageProxy, "__getattr__", counted)
    message = got._message
    for name in ("queue_name", "actor_name", "args", "kwargs", "options", "message_id"):
        assert getattr(got, name) == getattr(message, name)
    assert got.message_timestamp == message.message_timestamp
    assert got.options is message.options  # one dict: what a hook writes there, both see
    assert reached == []
    assert not got.failed and got == message


# --- broker attributes ------------------------------------------------------------------------


def test_broker_id_is_read_on_every_dispatch_call(ns_broker: RedisBroker) -> None:
    ns_broker.broker_id = "renewed"
    ns_broker.do_qsize("q")
    assert ns_broker.client.zscore("hk:__heartbeats__", "renewed") is not None, changed(
        "dramatiq.brokers.redis:RedisBroker._dispatch",
        "a broker_id written after start is not what dramatiq sends (Heartbeat renews it)",
    )


def test_max_unpack_size_is_a_positive_int(ns_broker: RedisBroker) -> None:
    size = dispatch_mod.max_unpack_size(ns_broker)
    assert isinstance(size, int) and size > 0, changed(
        "dramatiq.brokers.redis:RedisBroker._max_unpack_size", f"returned {size!r}"
    )


def test_maintenance_through_qsize_requeues_a_dead_workers_messages(
    ns_broker: RedisBroker,
) -> None:
    client: redis.Redis = ns_broker.client
    ns_broker.enqueue(Message("q", "a", (), {}, {}))
    assert next(ns_broker.consume("q", prefetch=1, timeout=100)) is not None
    dead = ns_broker.broker_id
    client.zadd(dispatch_mod.heartbeats_key("hk"), {dead: 0})  # silent since the epoch
    ns_broker.broker_id = "alive"
    Dispatch(ns_broker).qsize("q", maintain=True)
    assert client.llen(dispatch_mod.queue_key("hk", "q")) == 1, changed(
        "dramatiq.brokers.redis:dispatch.lua",
        "qsize with do_maintenance=1 did not requeue a dead worker's message (Heartbeat.beat)",
    )
    assert client.zscore(dispatch_mod.heartbeats_key("hk"), dead) is None


# --- the consumer -----------------------------------------------------------------------------


def test_redis_consumer_sets_the_attributes_the_copied_next_uses() -> None:
    cls = resolve("dramatiq.brokers.redis:_RedisConsumer")
    consumer = cls(RedisBroker(url="redis://127.0.0.1:1"), "q", 5, 100)
    seen = {
        "message_cache": consumer.message_cache,
        "queued_message_ids": consumer.queued_message_ids,
        "misses": consumer.misses,
        "prefetch": consumer.prefetch,
        "timeout": consumer.timeout,
        "queue_name": consumer.queue_name,
        "outstanding_message_count": consumer.outstanding_message_count,
    }
    expected = {
        "message_cache": [],
        "queued_message_ids": set(),
        "misses": 0,
        "prefetch": 5,
        "timeout": 100,
        "queue_name": "q",
        "outstanding_message_count": 0,
    }
    assert seen == expected, changed("dramatiq.brokers.redis:_RedisConsumer.__init__", f"{seen}")
    consumer.message_cache.append(b"x")
    consumer.queued_message_ids.add("m")
    assert consumer.outstanding_message_count == 2, changed(
        "dramatiq.brokers.redis:_RedisConsumer.__init__",
        "outstanding_message_count is not len(queued_message_ids) + len(message_cache)",
    )


def test_compute_backoff_counts_misses_and_caps_the_wait() -> None:
    misses, backoff_ms = compute_backoff(0, max_backoff=100)
    assert misses == 1 and 0 < backoff_ms <= 100, changed(
        "dramatiq.common:compute_backoff", f"compute_backoff(0) -> {(misses, backoff_ms)}"
    )
    _, capped = compute_backoff(30, max_backoff=100)
    assert capped <= 100, changed("dramatiq.common:compute_backoff", "max_backoff not honoured")


def test_delay_queue_name() -> None:
    assert dq_name("llm.x") == "llm.x.DQ", changed("dramatiq.common:dq_name", dq_name("llm.x"))


# --- the worker -------------------------------------------------------------------------------


def test_worker_and_worker_thread_set_the_attributes_loop_worker_uses() -> None:
    broker = StubBroker(middleware=[])
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=250)
    for name, kind in [
        ("queue_prefetch", int),
        ("delay_prefetch", int),
        ("consumers", dict),
        ("work_queue", PriorityQueue),
        ("workers", list),
        ("worker_timeout", int),
    ]:
        assert isinstance(getattr(worker, name, None), kind), changed(
            "dramatiq.worker:Worker.__init__", f"Worker.{name} is not a {kind.__name__}"
        )
    thread = dramatiq.worker.WorkerThread(
        broker=broker, consumers={}, work_queue=PriorityQueue(), worker_timeout=250
    )
    seen = {n: getattr(thread, n, None) for n in ("running", "paused", "timeout")}
    assert seen == {"running": False, "paused": False, "timeout": 0.25}, changed(
        "dramatiq.worker:WorkerThread.__init__", f"{seen}"
    )
    assert isinstance(thread.paused_event, threading.Event)


def test_worker_start_adds_its_threads_through_add_worker() -> None:
    broker = StubBroker(middleware=[])
    added: list[int] = []

    class Probe(dramatiq.Worker):
        def _add_worker(self) -> None:
            added.append(1)

    worker = Probe(broker, worker_threads=3)
    worker.start()
    worker.stop(timeout=1000)
    assert added == [1, 1, 1], changed(
        "dramatiq.worker:Worker.start", f"_add_worker called {len(added)} times for 3 threads"
    )


def consumer_thread(
    queue_name: str, priority: int
) -> tuple[dramatiq.ConsumerThread, PriorityQueue[Any]]:
    """dramatiq's consumer thread of `queue_name` (not started) on a stub broker whose actor
    "a" serves queue "q" at `priority`, and the work queue it puts into."""
    broker = StubBroker(middleware=[])
    dramatiq.Actor(
        lambda: None, broker=broker, actor_name="a", queue_name="q", priority=priority, options={}
    )
    work: PriorityQueue[Any] = PriorityQueue()
    thread = dramatiq.ConsumerThread(
        broker=broker, queue_name=queue_name, prefetch=1, work_queue=work, worker_timeout=100
    )
    return thread, work


def test_work_queue_items_carry_the_message_proxy() -> None:
    consumer, work = consumer_thread("q", priority=5)
    proxy = MessageProxy(Message("q", "a", (), {}, {}))
    consumer.handle_message(proxy)
    item = work.get_nowait()
    assert isinstance(item, resolve("dramatiq.worker:_WorkQueueItem"))
    assert item.message is proxy and item.priority == 5, changed(
        "dramatiq.worker:_WorkQueueItem", f"work queue item {item!r} has no .message/.priority"
    )


def test_loop_workers_work_queue_takes_dramatiqs_items_and_serves_lanes_in_turn() -> None:
    broker = StubBroker(middleware=[])
    for name, queue, priority in [("n", "q", 10), ("n1", "q@1", 10), ("h", "q@high", 0)]:
        dramatiq.Actor(
            lambda: None,
            broker=broker,
            actor_name=name,
            queue_name=queue,
            priority=priority,
            options={},
        )
    worker = LoopWorker(broker, lambda: None, concurrency=2)
    threads = {
        q: dramatiq.ConsumerThread(
            broker=broker,
            queue_name=q,
            prefetch=1,
            work_queue=worker.work_queue,
            worker_timeout=100,
        )
        for q in ("q", "q@1", "q@high")
    }
    for queue, actor, n in [("q", "n", 4), ("q@1", "n1", 2), ("q@high", "h", 1)]:
        for _ in range(n):  # as dramatiq's consumer thread hands each fetched message on
            threads[queue].handle_message(MessageProxy(Message(queue, actor, (), {}, {})))
    served = [worker.work_queue.get_nowait().message.queue_name for _ in range(7)]
    assert served == ["q@high", "q", "q@1", "q", "q@1", "q", "q"], changed(
        "dramatiq.worker:_WorkQueueItem",
        f"items put by ConsumerThread.handle_message were served as {served}",
    )


def test_consumer_thread_asks_for_its_consumer_by_keyword() -> None:
    source = upstream_source("dramatiq.worker:ConsumerThread.run")
    call = re.search(r"self\.broker\.consume\((.*?)\)", source, re.S)
    assert call is not None, changed("dramatiq.worker:ConsumerThread.run", "no consume() call")
    kwargs = dict(re.findall(r"(\w+)=([\w.]+)", call.group(1)))
    inspect.signature(LaneBroker.consume).bind(None, **kwargs)  # TypeError on a new keyword
    assert set(kwargs) == {"queue_name", "prefetch", "timeout"}, changed(
        "dramatiq.worker:ConsumerThread.run", f"consume() now gets {sorted(kwargs)}"
    )


def test_post_process_message_acks_through_the_thread_s_consumer() -> None:
    acked: list[str] = []

    class Recorder(dramatiq.Consumer):
        def ack(self, message: MessageProxy) -> None:
            acked.append(message.message_id)

        def nack(self, message: MessageProxy) -> None:
            acked.append("nack")

    thread = dramatiq.ConsumerThread(
        broker=StubBroker(middleware=[]),
        queue_name="q",
        prefetch=1,
        work_queue=PriorityQueue(),
        worker_timeout=100,
    )
    thread.consumer = Recorder()
    proxy = MessageProxy(Message("q", "a", (), {}, {}))
    thread.post_process_message(proxy)
    assert acked == [proxy.message_id], changed(
        "dramatiq.worker:ConsumerThread.post_process_message", f"acked {acked}"
    )


def test_a_message_without_ack_hooks_is_acked_by_the_consumer_alone() -> None:
    # post_process_message of a message that did not fail: the two ack hooks around the
    # consumer's ack, nothing else. LoopFeeder._end_group skips it when there are no hooks.
    calls: list[str] = []

    class Hooked(Middleware):
        def before_ack(self, broker: Any, message: Any) -> None:
            calls.append("before")

        def after_ack(self, broker: Any, message: Any) -> None:
            calls.append("after")

    class Recorder(dramatiq.Consumer):
        def ack(self, message: MessageProxy) -> None:
            calls.append("ack")

        def nack(self, message: MessageProxy) -> None:
            calls.append("nack")

    thread = dramatiq.ConsumerThread(
        broker=StubBroker(middleware=[Hooked()]),
        queue_name="q",
        prefetch=1,
        work_queue=PriorityQueue(),
        worker_timeout=100,
    )
    thread.consumer = Recorder()
    thread.post_process_message(MessageProxy(Message("q", "a", (), {}, {})))
    assert calls == ["before", "ack", "after"], changed(
        "dramatiq.worker:ConsumerThread.post_process_message", f"did {calls}"
    )


def test_the_delay_scan_moves_only_items_due_and_is_skipped_when_empty() -> None:
    from workers.dramatiq_ext.loop_worker import _delayed_if_any

    thread, _ = consumer_thread("q.DQ", priority=0)
    scans: list[int] = []

    def scan() -> None:
        scans.append(1)
        thread.handle_delayed_messages()

    # An empty delay queue: the scan is not even started.
    _delayed_if_any(thread, scan)
    assert scans == []
    # A message not yet due stays where it is; dramatiq's scan puts it back.
    item = resolve("dramatiq.worker:_WorkQueueItem")
    later = MessageProxy(Message("q.DQ", "a", (), {}, {"eta": 2**62}))
    thread.delay_queue.put(item(2**62, later))
    _delayed_if_any(thread, scan)
    assert scans == [1] and thread.delay_queue.qsize() == 1, changed(
        "dramatiq.worker:ConsumerThread.handle_delayed_messages", "an item not due was moved"
    )


def test_loop_worker_gives_every_consumer_thread_the_delay_fast_path(
    redis_server: RedisServer,
) -> None:
    broker = build_broker(Settings(redis_url=redis_server.url))

    async def fn(payload: dict[str, Any]) -> None:
        return None

    dramatiq.Actor(fn, broker=broker, actor_name="t", queue_name="q", priority=0, options={})
    worker = LoopWorker(broker, fn, concurrency=1, worker_timeout=100)
    worker.start()
    try:
        assert set(worker.consumers) >= {"q", "q.DQ"}, changed(
            "dramatiq.worker:Worker._add_consumer", f"consumers {sorted(worker.consumers)}"
        )
        for name, thread in worker.consumers.items():
            assert "handle_delayed_messages" in vars(thread), name
    finally:
        worker.stop(timeout=10_000)
        broker.close()


@pytest.mark.parametrize(
    "data",
    [
        Message("q", "a", ({"i": 1, "s": "ü"},), {"k": [1, 2]}, {"eta": 5}).encode(),
        Message("q", "a", (), {}, {}).encode(),
        b"not json",
        b"[1, 2]",
        b'{"queue_name": "q"}',
        b'{"queue_name":"q","actor_name":"a","args":{},"kwargs":{},"options":{},'
        b'"message_id":"x","message_timestamp":1}',
        b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},'
        b'"message_id":"x","message_timestamp":1,"extra":1}',
    ],
)
def test_the_consumers_decode_is_dramatiqs(data: bytes) -> None:
    from workers.dramatiq_ext.consumer import decode

    try:
        expected: Any = Message.decode(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode(data)
        return
    got = decode(data)
    assert type(got) is Message
    assert got == expected and got.asdict() == expected.asdict(), changed(
        "dramatiq.message:Message.decode", f"{got!r} != {expected!r}"
    )
    assert type(got.args) is tuple


# --- middleware -------------------------------------------------------------------------------


def test_after_hooks_run_in_reverse_and_swallow_errors() -> None:
    order: list[str] = []

    class First(Middleware):
        def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
            order.append("first")

    class Second(Middleware):
        def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
            order.append("second")
            raise RuntimeError("swallowed")

    broker = StubBroker(middleware=[First(), Second()])
    broker.emit_after("ack", None)  # dramatiq logs Second's error and goes on
    assert order == ["second", "first"], changed(
        "dramatiq.broker:Broker.emit_after", f"after_* hooks ran as {order}"
    )


def lane_broker() -> LaneBroker:
    """A LaneBroker on a Redis that is never reached (its emitters need no server)."""
    broker = build_broker(Settings(redis_url="redis://127.0.0.1:1"))
    assert isinstance(broker, LaneBroker)
    return broker


def recorders(calls: list[str]) -> list[Middleware]:
    """Middleware implementing a few hooks each (one failing, one skipping), and a plain one."""

    class Skips(Middleware):
        def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
            calls.append("skips.before_process_message")
            raise SkipMessage()

    class Acks(Middleware):
        def before_ack(self, broker: dramatiq.Broker, message: Any) -> None:
            calls.append("acks.before_ack")

        def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
            calls.append("acks.after_ack")
            raise RuntimeError("logged, not raised")

    class Late(Middleware):
        def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
            calls.append("late.after_ack")

    return [Acks(), Middleware(), Late(), Skips()]


def emit_all(broker: dramatiq.Broker) -> None:
    broker.emit_before("ack", None)
    broker.emit_after("ack", None)
    with pytest.raises(SkipMessage):
        broker.emit_before("process_message", None)
    broker.emit_after("process_message", None, result=1)


def test_lane_broker_emits_what_dramatiqs_emitters_emit(caplog: pytest.LogCaptureFixture) -> None:
    # Given the same middleware on dramatiq's broker and on a LaneBroker (after its own),
    upstream: list[str] = []
    stub = StubBroker(middleware=recorders(upstream))
    ours: list[str] = []
    broker = lane_broker()
    for middleware in recorders(ours):
        broker.add_middleware(middleware)
    # when both emit the same signals,
    emit_all(stub)
    emit_all(broker)
    broker.close()
    # then the same hooks run in the same order, with errors logged and SkipMessage raised.
    assert upstream == [
        "acks.before_ack",
        "late.after_ack",
        "acks.after_ack",
        "skips.before_process_message",
    ], changed("dramatiq.broker:Broker.emit_before", f"dramatiq emitted {upstream}")
    assert ours == upstream
    failures = [r for r in caplog.records if "Unexpected failure in after_ack" in r.getMessage()]
    assert len(failures) == 2


def test_lane_broker_skips_only_middlewares_empty_hooks() -> None:
    broker = lane_broker()
    calls: list[str] = []
    # A middleware added after the first emission is called from then on,
    broker.emit_before("ack", None)
    for middleware in recorders(calls):
        broker.add_middleware(middleware)
    broker.emit_before("ack", None)
    # and a hook set on an instance counts, like one of its class.
    plain = Middleware()
    plain.before_ack = lambda broker, message: calls.append("instance.before_ack")  # type: ignore[method-assign]
    broker.add_middleware(plain)
    broker.emit_before("ack", None)
    broker.close()
    assert calls == ["acks.before_ack", "acks.before_ack", "instance.before_ack"]
    assert not implements(Middleware(), "after_ack")
    assert implements(object(), "after_ack")  # no hook at all: called, and its error logged


def test_middlewares_hooks_are_empty() -> None:
    hooks = [n for n in vars(Middleware) if n.startswith(("before_", "after_"))]
    assert "before_process_message" in hooks and "after_ack" in hooks
    for name in hooks:
        tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(Middleware, name))))
        fn = tree.body[0]
        assert isinstance(fn, ast.FunctionDef)
        body = [
            n
            for n in fn.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        ]
        assert all(isinstance(n, ast.Pass) for n in body), changed(
            "dramatiq.middleware.middleware:Middleware", f"Middleware.{name} now does something"
        )


def test_build_broker_puts_wait_for_redis_after_retries() -> None:
    broker = build_broker(Settings(redis_url="redis://127.0.0.1:1"))
    kinds = [type(m) for m in broker.middleware]
    assert kinds.index(WaitForRedis) > kinds.index(Retries), (
        "WaitForRedis must come after Retries so its after_process_message runs first"
    )
    broker.close()


def test_retries_reenqueues_and_a_failing_reenqueue_is_swallowed() -> None:
    tried: list[str] = []

    class Down(StubBroker):
        def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
            tried.append(message.message_id)
            raise redis.ConnectionError("down")

    broker = Down(middleware=[Retries(max_retries=3)])
    dramatiq.Actor(
        lambda: None, broker=broker, actor_name="a", queue_name="q", priority=0, options={}
    )
    proxy = MessageProxy(Message("q", "a", (), {}, {}))
    broker.emit_after("process_message", proxy, exception=redis.ConnectionError("x"))
    assert tried == [proxy.message_id], changed(
        "dramatiq.middleware.retries:Retries.after_process_message",
        "a failed message was not re-enqueued through broker.enqueue",
    )


def test_async_io_loop_runs_a_loop_and_stops_it() -> None:
    broker = StubBroker(middleware=[])
    middleware = AsyncIOLoop()
    middleware.after_worker_shutdown(broker, None)  # never started: no error
    middleware.before_worker_boot(broker, None)
    thread = dramatiq.asyncio.get_event_loop_thread()
    assert thread is not None and thread.loop.is_running(), changed(
        "dramatiq.asyncio:EventLoopThread", "start(timeout=) did not leave a running .loop"
    )
    middleware.after_worker_shutdown(broker, None)
    assert dramatiq.asyncio.get_event_loop_thread() is None and not thread.is_alive()


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_async_io_loop_runs_jobs_on_the_chosen_loop(
    choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop set on the thread before `start` is the one that runs: `run` runs `self.loop`."""
    import uvloop

    monkeypatch.setenv("BATCHYARD_EVENT_LOOP", choice)
    broker = StubBroker(middleware=[])
    middleware = AsyncIOLoop()
    middleware.before_worker_boot(broker, None)
    try:
        thread = dramatiq.asyncio.get_event_loop_thread()
        assert thread is not None

        async def running() -> asyncio.AbstractEventLoop:
            return asyncio.get_running_loop()

        loop = asyncio.run_coroutine_threadsafe(running(), thread.loop).result(timeout=5)
        assert isinstance(loop, uvloop.Loop) is (choice == "uvloop"), changed(
            "dramatiq.asyncio:EventLoopThread", "run() did not run the .loop set before start"
        )
    finally:
        middleware.after_worker_shutdown(broker, None)


def test_event_loop_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_EVENT_LOOP", "tokio")
    with pytest.raises(ValueError, match="BATCHYARD_EVENT_LOOP"):
        new_event_loop()


def test_loop_worker_runs_a_message_end_to_end(redis_server: RedisServer) -> None:
    """The copies together: BatchAckConsumer fetches, LoopFeeder runs, AckBatcher acks."""
    broker = build_broker(Settings(redis_url=redis_server.url))
    done = threading.Event()

    async def fn(payload: dict[str, Any]) -> None:
        done.set()

    dramatiq.Actor(fn, broker=broker, actor_name="t", queue_name="q", priority=0, options={})
    broker.enqueue(Message("q", "t", ({},), {}, {}))
    worker = LoopWorker(broker, fn, concurrency=2, worker_timeout=100)
    worker.start()
    try:
        assert done.wait(20), "LoopWorker never ran the message (see HOOKS.md: worker copies)"
        assert isinstance(broker, LaneBroker) and broker.acks.flush(10)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    assert broker.client.hlen(dispatch_mod.msgs_key(broker.namespace, "q")) == 0
