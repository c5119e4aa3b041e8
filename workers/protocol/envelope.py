"""The job envelope: the dramatiq message that carries one `Job` on its queue.

Producers write envelopes straight into dramatiq's Redis keys (`enqueue.lua`), workers put
jobs back with dramatiq's dispatch script (`workers.requeue`); both build them here, and the
worker's actor reads the `Job` back from `args[0]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, get_args

import orjson

from schemas.job import Job, Task
from schemas.request import EndpointKind, LLMRequest, RouteHop
from workers.protocol.lanes import actor_for, delay_queue, queue_name

_JOB_JSON = Job.__pydantic_serializer__.to_json
_REQUEST_JSON = LLMRequest.__pydantic_serializer__.to_json


class Envelope(NamedTuple):
    """An encoded message and where it goes."""

    queue: str
    redis_id: str
    data: bytes


def _message(
    queue: str,
    actor: str,
    job: orjson.Fragment | dict[str, Any],
    options: dict[str, Any],
    now: float,
) -> bytes:
    return orjson.dumps(
        {
            "queue_name": queue,
            "actor_name": actor,
            "args": [job],
            "kwargs": {},
            "options": options,
            # dramatiq needs a unique message id; the Redis id (a uuid4's hex) is one.
            "message_id": options["redis_message_id"],
            "message_timestamp": int(now * 1000),
        }
    )


def encode(job: Job, *, redis_id: str, now: float, delay_ms: int = 0) -> Envelope:
    """The message for `job` at its current hop, on its lane; due `delay_ms` after `now`."""
    queue = queue_name(job.current.endpoint, job.lane)
    options: dict[str, Any] = {"redis_message_id": redis_id}
    if delay_ms > 0:
        queue = delay_queue(queue)
        options["eta"] = int(now * 1000) + delay_ms
    body = orjson.Fragment(_JOB_JSON(job, exclude_defaults=True))
    return Envelope(queue, redis_id, _message(queue, actor_for(job.lane), body, options, now))


def decode(data: bytes | str) -> Job:
    """The job an encoded message carries."""
    return Job.model_validate(orjson.loads(data)["args"][0])


def _hops(route: list[RouteHop]) -> list[dict[str, Any]]:
    return [h.model_dump(mode="json", exclude_defaults=True) for h in route]


class BatchEnvelopes:
    """`encode` for the many first-hop jobs of one batch, at the cost the submit path allows.

    Building and serializing a `Job` per line would cost ~4x the rest of the submit path, so
    what lines share (batch, route, deadline, task, lane) is dumped once and each line adds its
    key, request and trace; `tests/unit/test_protocol.py` checks the result equals `encode`'s.
    """

    def __init__(
        self,
        batch_id: str,
        route: list[RouteHop],
        *,
        deadline: float | None = None,
        task: Task | None = None,
        lane: str = "",
    ) -> None:
        self.route = route
        self.lane = lane
        self.actor = actor_for(lane)
        self.queue = queue_name(route[0].endpoint, lane)
        shared: dict[str, Any] = {"batch_id": batch_id, "route": _hops(route)}
        if deadline is not None:
            shared["deadline"] = deadline
        if task is not None:
            shared["task"] = self.task(task)
        if lane:
            shared["lane"] = lane
        self._shared = shared

    @property
    def has_task(self) -> bool:
        """Whether every job of the batch carries the batch's own task (e.g. GMN)."""
        return "task" in self._shared

    @staticmethod
    def task(task: Task) -> dict[str, Any]:
        """A task as `encode` writes it (dump it once when many lines share it)."""
        return task.model_dump(mode="json", exclude_defaults=True)

    def encode(
        self,
        key: str,
        request: LLMRequest,
        trace: dict[str, str],
        redis_id: str,
        now: float,
        *,
        route: list[RouteHop] | None = None,
        task: dict[str, Any] | None = None,
    ) -> Envelope:
        """The envelope of one line's job; `route` and `task` replace the batch's."""
        job = {
            **self._shared,
            "key": key,
            "request": _plain_json(request) if request.is_plain else _request_json(request),
            "enqueued_at": now,
            "trace": trace,
        }
        queue = self.queue
        if route is not None:
            job["route"] = _hops(route)
            queue = queue_name(route[0].endpoint, self.lane)
        if task is not None:
            job["task"] = task
        options = {"redis_message_id": redis_id}
        try:
            data = _message(queue, self.actor, job, options, now)
        except TypeError:  # a body value only pydantic serializes (bytes, a set, a model...)
            job["request"] = _request_json(request)
            data = _message(queue, self.actor, job, options, now)
        return Envelope(queue, redis_id, data)

    def plain_writer(self, now: float) -> Callable[[str, str, dict[str, Any], str], bytes]:
        """`encode` for the plain requests of a chunk made at `now` (a request of the batch's
        route and task, with no batchyard fields, and tracing off), as a function of (key =
        custom_id, kind, body, redis_id): what is the same for the whole chunk is written
        once, and each message adds its own parts (the dict `encode` builds, and its dump, were
        a quarter of a submitted line's CPU, #22). The same document `encode` writes."""
        job = orjson.dumps(self._shared)[:-1]  # the batch's fields, the object left open
        head = b'{"queue_name":%b,"actor_name":%b,"args":[%b,"key":' % (
            orjson.dumps(self.queue),
            orjson.dumps(self.actor),
            job,
        )
        at = b',"enqueued_at":%b,"trace":{"traceparent":"00-' % orjson.dumps(now)
        stamp = b'"},"message_id":"%b","message_timestamp":%d}'
        join, dumps, stamp_ms = b"".join, orjson.dumps, int(now * 1000)

        def write(key: str, kind: str, body: dict[str, Any], redis_id: str) -> bytes:
            cid, rid = dumps(key), redis_id.encode()
            return join(
                (
                    head,
                    cid,
                    b',"request":{"custom_id":',
                    cid,
                    _KINDS[kind],
                    b',"body":',
                    dumps(body),
                    b"}",
                    at,
                    rid,
                    b"-",
                    rid[8:24],
                    b'-00"}}],"kwargs":{},"options":{"redis_message_id":"',
                    rid,
                    stamp % (rid, stamp_ms),
                )
            )

        return write


#: A request's `kind` as `plain_writer` writes it (the default, chat, left out).
_KINDS = {
    kind: b"" if kind == "chat" else b',"kind":"%b"' % kind.encode()
    for kind in get_args(EndpointKind)
}


def _request_json(request: LLMRequest) -> orjson.Fragment:
    return orjson.Fragment(_REQUEST_JSON(request, exclude_defaults=True))


def _plain_json(request: LLMRequest) -> dict[str, Any]:
    """What `_request_json` writes for a request of three fields, as a dict that orjson
    encodes with the envelope: a line's body is serialized once, not by pydantic first
    (its serializer was ~10 % of a submitted line's cost)."""
    if request.kind == "chat":  # the default, left out like `exclude_defaults` does
        return {"custom_id": request.custom_id, "body": request.body}
    return {"custom_id": request.custom_id, "kind": request.kind, "body": request.body}
