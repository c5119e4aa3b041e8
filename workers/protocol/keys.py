"""Every Redis key name of batchyard, under one namespace (default `batchyard`)."""

from __future__ import annotations

from typing import Literal, NamedTuple

#: Channel (after the dramatiq namespace) on which enqueue scripts name the queues they filled.
WAKE_CHANNEL = "__wake__"


class Keys:
    """Key names under one namespace."""

    def __init__(self, namespace: str = "batchyard") -> None:
        self.ns = namespace
        #: dramatiq's own keys live under this prefix: `batchyard:dq:llm.mock`, ...
        self.dramatiq_ns = f"{namespace}:dq"
        #: Zset batch id -> created_at: the index of batches, trimmed to the result TTL.
        self.batches = f"{namespace}:batches"
        #: Counter that spreads new batches round-robin over the normal lanes.
        self.lane_turn = f"{namespace}:lane_turn"
        #: Pub/sub channel on which enqueues name the queues they filled (see `Waker`).
        self.wake = f"{self.dramatiq_ns}:{WAKE_CHANNEL}"
        #: Pub/sub channel on which `cancel.lua` names each batch it cancels: workers stop
        #: sending its requests at once, without a Redis read per call.
        self.cancels = f"{namespace}:cancels"

    def batch(self, batch_id: str) -> str:
        """Hash: the batch record (`workers.protocol.batch_record`)."""
        return f"{self.ns}:batch:{batch_id}"

    def ids(self, batch_id: str) -> str:
        """Set of custom_ids in a batch: finds duplicate lines without producer memory."""
        return f"{self.ns}:batch:{batch_id}:ids"

    def done(self, batch_id: str) -> str:
        """Hash result key -> stream id: the exactly-once guard of result writes."""
        return f"{self.ns}:batch:{batch_id}:done"

    def failed(self, batch_id: str) -> str:
        """Hash result key -> dead letter (`workers.protocol.dead_letter`) of requests that
        ended in error: what `retry --failed` re-runs and `failures` lists by cause."""
        return f"{self.ns}:batch:{batch_id}:failed"

    def stream(self, batch_id: str) -> str:
        """Stream of results in completion order; collectors read it with a cursor."""
        return f"{self.ns}:batch:{batch_id}:results"

    def results(self, batch_id: str) -> tuple[str, str, str, str]:
        """The keys one batch's result writes touch, in `write_results.lua`'s order."""
        return (
            self.batch(batch_id),
            self.done(batch_id),
            self.stream(batch_id),
            self.failed(batch_id),
        )

    def queue(self, queue: str) -> str:
        """dramatiq's list of message ids of a queue."""
        return f"{self.dramatiq_ns}:{queue}"

    def queue_msgs(self, queue: str) -> str:
        """dramatiq's hash of message id -> message of a queue."""
        return f"{self.dramatiq_ns}:{queue}.msgs"

    def health(self, endpoint: str) -> str:
        """Hash of an endpoint's health: breaker state and per-second ok/fail buckets."""
        return f"{self.ns}:health:{endpoint}"

    def latency(self, endpoint: str) -> str:
        """Capped list of an endpoint's recent call latencies (ms), newest first."""
        return f"{self.ns}:latency:{endpoint}"

    def probe(self, endpoint: str) -> str:
        """Lease held by the one worker allowed to probe a half-open endpoint."""
        return f"{self.ns}:probe:{endpoint}"

    def limit(self, endpoint: str, model: str | None = None) -> LimitKeys:
        """The limiter keys of an endpoint, or of one model of it."""
        base = f"{self.ns}:rl:{endpoint}"
        return LimitKeys.of(base if model is None else f"{base}:model:{model}")

    def all_leases(self) -> str:
        """A SCAN pattern for every limiter scope's concurrency leases (`LimitKeys.leases`)."""
        return f"{glob_escape(self.ns)}:rl:*:leases"

    def offload(self, endpoint: str, part: OffloadPart) -> str:
        """A batch-mode endpoint's offload state (`workers.offload`): `pending` list of parked
        job JSON, `since` when the oldest was parked, `lease` the flushing worker's lease,
        `open` set of its vendor batch ids."""
        return f"{self.ns}:offload:{endpoint}:{part}"

    def vendor_batch(self, vendor_id: str) -> str:
        """Hash: one vendor batch's endpoint, state and jobs in line order (`workers.offload`)."""
        return f"{self.ns}:offload:vb:{vendor_id}"

    def cache(self, digest: str) -> tuple[str, str]:
        """The response cache plugin's keys for one request digest: the stored answer, and the
        lock its first caller holds while the others wait for that answer."""
        answer = f"{self.ns}:cache:{digest}"
        return answer, f"{answer}:lock"


def glob_escape(text: str) -> str:
    """`text` with Redis glob characters escaped, to start a SCAN pattern with."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


#: The parts of a batch-mode endpoint's offload state (`Keys.offload`).
OffloadPart = Literal["pending", "since", "lease", "open"]


class LimitKeys(NamedTuple):
    """The keys of one limiter scope (an endpoint, or an endpoint's model), in the order the
    limiter scripts take them."""

    #: Hash: the window's token sum (`win_t`), the provider's buckets as learned (`lr_*`,
    #: `lt_*`), limits it announced, adaptive concurrency (`aimd`).
    state: str
    #: Zset lease id -> expiry (ms): the concurrency leases in use.
    leases: str
    #: String: the scope's Retry-After pause, "<until_ms> <len_ms> <probing>" (`lua/lib/pause`;
    #: read it with `pause_until_s`). Only an endpoint's scope is paused, not its models'.
    pause: str
    #: Zset "<lease> <tokens>" -> admission ms: the admissions of the configured rpm/tpm
    #: caps' sliding window (`lua/lib/window`).
    window: str

    @classmethod
    def of(cls, scope: str) -> LimitKeys:
        """The keys under one scope prefix."""
        return cls(scope, f"{scope}:leases", f"{scope}:pause", f"{scope}:window")


#: How long an admission counts against a configured rpm/tpm cap (`lua/lib/window`): 60 s plus
#: 1 s for the way from the limiter to the provider.
LIMIT_WINDOW_MS = 61_000


def pause_until_s(raw: bytes | str | None) -> float | None:
    """Epoch seconds until which a scope's pause key (`LimitKeys.pause`) holds it, or None."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return float(text.split(" ", 1)[0]) / 1000
    except ValueError:
        return None
