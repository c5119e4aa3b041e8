"""Messages packed for `enqueue.lua` and `retry_failed.lua`: one ARGV blob for a whole chunk.

Packing four arguments per message (4,000 per chunk) cost the producer more than everything
else together; one blob of SEP-terminated fields costs a few appends per message. Queue keys
still go through KEYS: the blob names a queue by its index there.
"""

from __future__ import annotations

from workers.protocol.keys import Keys
from workers.protocol.scripts import ScriptCall

#: Ends each field of a blob; JSON text, ids and custom_ids never contain a NUL byte.
SEP = b"\0"


class MessageBlob:
    """(key, queue, message id, message) fields for one script call."""

    __slots__ = ("data", "queues")

    def __init__(self) -> None:
        self.data = bytearray()
        #: Queue name -> its index (encoded) in the call's queue keys.
        self.queues: dict[str, bytes] = {}

    def add(self, key: str, queue: str, redis_id: str, message: bytes) -> None:
        """Append one message for `queue`."""
        index = self.queues.get(queue)
        if index is None:
            index = self.queues[queue] = b"%d" % len(self.queues)
        self.data += SEP.join((key.encode(), index, redis_id.encode(), message, b""))

    def __bool__(self) -> bool:
        return bool(self.data)

    def fields(self) -> list[bytes]:
        """The blob split into its fields (four per message), for tests and debugging."""
        return bytes(self.data).split(SEP)[:-1]

    def _queue_keys(self, keys: Keys) -> list[str]:
        out = []
        for queue in self.queues:
            out += [keys.queue(queue), keys.queue_msgs(queue)]
        return out

    def enqueue_call(
        self, keys: Keys, batch_id: str, ttl_s: int, seal_at: float | None = None
    ) -> ScriptCall:
        """Keyword arguments of an `enqueue.lua` call that adds these messages to a batch
        (and, with `seal_at`, seals it: the batch's last chunk)."""
        return {
            "keys": [keys.batch(batch_id), keys.ids(batch_id), keys.wake, *self._queue_keys(keys)],
            "args": [ttl_s, "" if seal_at is None else seal_at, bytes(self.data), *self.queues],
        }

    def retry_call(self, keys: Keys, batch_id: str) -> ScriptCall:
        """Keyword arguments of a `retry_failed.lua` call that re-runs these dead letters."""
        first = [keys.batch(batch_id), keys.done(batch_id), keys.failed(batch_id), keys.wake]
        return {
            "keys": [*first, *self._queue_keys(keys)],
            "args": [bytes(self.data), *self.queues],
        }
