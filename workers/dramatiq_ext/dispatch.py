"""dramatiq's `dispatch.lua` with named arguments, and the Redis keys its commands touch.

dramatiq's `RedisBroker` calls its one script with a positional ARGV (`RedisBroker._dispatch`).
batchyard needs two of its commands outside dramatiq's own paths: `enqueue` from the event loop
(`workers.requeue`) and `qsize` with maintenance forced on (`Heartbeat`). Both go through here,
so the ARGV order is written down once and checked against the installed script by
tests/unit/test_dramatiq_hooks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from workers.results import evalsha_sync

#: dispatch.lua's `fetch` in one pass (LRANGE+LTRIM, one SADD, one HMGET) on its key layout.
FETCH_MANY = Path(__file__).with_name("fetch_many.lua").read_bytes()

#: dispatch.lua's ARGV before each command's own arguments, in order.
ARGV = (
    "command",
    "timestamp",
    "queue_name",
    "worker_id",
    "heartbeat_timeout",
    "dead_message_ttl",
    "do_maintenance",
    "max_unpack_size",
)

#: The commands batchyard sends itself (dramatiq's consumer sends fetch, ack, nack, requeue).
COMMANDS = ("enqueue", "qsize")

Arg = str | int | bytes


def heartbeats_key(namespace: str) -> str:
    """dramatiq's sorted set of worker id -> last heartbeat (ms)."""
    return f"{namespace}:__heartbeats__"


def acks_key(namespace: str, worker_id: str, queue: str) -> str:
    """dramatiq's set of ids `worker_id` fetched from `queue` and has not acked yet."""
    return f"{namespace}:__acks__.{worker_id}.{queue}"


def queue_key(namespace: str, queue: str) -> str:
    """dramatiq's list of message ids waiting on `queue`."""
    return f"{namespace}:{queue}"


def msgs_key(namespace: str, queue: str) -> str:
    """dramatiq's hash of message id -> encoded message of `queue`."""
    return f"{namespace}:{queue}.msgs"


def max_unpack_size(broker: RedisBroker) -> int:
    """How many values dramatiq's scripts unpack at once (half the Lua stack, cached)."""
    return int(broker._max_unpack_size())  # type: ignore[no-untyped-call]


def argv(
    broker: RedisBroker, command: str, queue: str, *args: Arg, maintain: bool = False
) -> list[Arg]:
    """The ARGV of one dispatch call, read from the broker now (its worker id can change)."""
    return [
        command,
        current_millis(),
        queue,
        broker.broker_id,
        broker.heartbeat_timeout,
        broker.dead_message_ttl,
        int(maintain),
        max_unpack_size(broker),
        *args,
    ]


class Dispatch:
    """dispatch.lua on the broker's own (blocking) client."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._script: Any = broker.scripts["dispatch"]
        self._keys = [broker.namespace]

    def enqueue(self, queue: str, message_id: str, data: bytes) -> None:
        """Store `data` under `message_id` and queue the id, as `RedisBroker.enqueue` does."""
        self._script(keys=self._keys, args=argv(self.broker, "enqueue", queue, message_id, data))

    def qsize(self, queue: str, *, maintain: bool = False) -> int:
        """Messages of `queue` and its delay queue, stored or awaiting an ack; with `maintain`,
        first requeue what dead workers held and drop expired dead letters of `queue`."""
        args = argv(self.broker, "qsize", queue, maintain=maintain)
        return int(self._script(keys=self._keys, args=args))


class Fetch:
    """dispatch.lua's `fetch` for one queue: `fetch_many.lua`, or dramatiq's own script on the
    calls that draw dramatiq's random maintenance (it runs maintenance before the fetch)."""

    def __init__(self, broker: RedisBroker, queue: str) -> None:
        self.broker = broker
        self.queue = queue
        ns = broker.namespace
        self._client = broker.client
        self._script: Any = broker.client.register_script(FETCH_MANY)
        self._keys = [heartbeats_key(ns), queue_key(ns, queue), msgs_key(ns, queue), ""]
        self._dispatch: Any = broker.scripts["dispatch"]

    def __call__(self, worker_id: str, n: int) -> list[bytes | None]:
        """Up to `n` messages of the queue, their ids now in `worker_id`'s ack set."""
        n = min(n, max_unpack_size(self.broker))  # as dispatch.lua caps it
        if self.broker._should_do_maintenance("fetch"):
            args = argv(self.broker, "fetch", self.queue, n, maintain=True)
            args[ARGV.index("worker_id")] = worker_id  # the id the consumer records as owner
            return list(self._dispatch(keys=[self.broker.namespace], args=args))
        keys = self._keys.copy()
        keys[3] = acks_key(self.broker.namespace, worker_id, self.queue)
        return list(
            evalsha_sync(self._client, self._script, keys, [current_millis(), worker_id, n])
        )


class AsyncDispatch:
    """dispatch.lua on an asyncio client, so the event loop never blocks on an enqueue."""

    def __init__(self, client: aioredis.Redis, broker: RedisBroker) -> None:
        self.broker = broker
        source = broker.scripts["dispatch"].script
        self._script: Any = client.register_script(source)
        self._keys = [broker.namespace]

    async def enqueue(self, queue: str, message_id: str, data: bytes) -> None:
        """Store `data` under `message_id` and queue the id, as `RedisBroker.enqueue` does."""
        args = argv(self.broker, "enqueue", queue, message_id, data)
        await self._script(keys=self._keys, args=args)
