"""Prometheus metrics. Worker children write them in multiprocess mode (the supervisor sets
PROMETHEUS_MULTIPROC_DIR); the supervisor serves one /metrics for all of them, adding queue
depth and breaker state read from Redis at scrape time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

import redis

from workers.protocol.keys import Keys
from workers.protocol.lanes import endpoint_queues, queue_name

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily


class Metric:
    """A prometheus_client metric, made (and registered) at its first use.

    A worker whose metrics nobody serves (`RECORDING` false: every `batchyard run`) never
    uses one, so it does not import prometheus_client (~13 ms of CPU at each start, #22).
    """

    def __init__(self, kind: str, name: str, doc: str, labels: list[str], **options: Any) -> None:
        self.kind = kind
        self.name = name
        self.doc = doc
        self.labelnames = labels
        self.options = options

    @cached_property
    def made(self) -> Any:
        """The prometheus_client `Counter`, `Gauge` or `Histogram` itself."""
        import prometheus_client

        make = getattr(prometheus_client, self.kind)
        return make(self.name, self.doc, self.labelnames, **self.options)

    def labels(self, *values: str) -> Any:
        """The metric's child for these label values."""
        return self.made.labels(*values)


LABEL = ["endpoint"]
JOBS = Metric(
    "Counter",
    "batchyard_jobs",
    "Requests finished, by endpoint and final status",
    ["endpoint", "status"],
)
LATENCY = Metric(
    "Histogram",
    "batchyard_request_latency_seconds",
    "Provider call latency",
    LABEL,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
TOKENS = Metric(
    "Counter", "batchyard_tokens", "Tokens reported by providers", ["endpoint", "direction"]
)
COST = Metric("Counter", "batchyard_cost_usd", "Cost by the configured price table", LABEL)
RATE_LIMITED = Metric("Counter", "batchyard_rate_limited", "429 answers from providers", LABEL)
RETRIES = Metric("Counter", "batchyard_retries", "Calls retried on the same endpoint", LABEL)
FAILOVERS = Metric("Counter", "batchyard_failovers", "Requests moved on from an endpoint", LABEL)
IN_FLIGHT = Metric(
    "Gauge", "batchyard_in_flight", "Provider calls in progress", LABEL, multiprocess_mode="livesum"
)


#: Whether this process's metrics can be read: a worker's are served only through the
#: multiprocess directory of a supervisor with `--metrics-port`, which prometheus_client, like
#: this, reads at import. Elsewhere (`batchyard run`, a supervisor without a port) nobody can
#: read them, and each request paid ~5 us to update them (#22): `labeled` then hands out a
#: child that records nothing, as spans cost nothing without an exporter.
RECORDING = "PROMETHEUS_MULTIPROC_DIR" in os.environ


class _Unrecorded:
    """A metric child that records nothing: what `labeled` gives when nobody can read it."""

    def inc(self, amount: float = 1) -> None:
        """Nothing."""

    def dec(self, amount: float = 1) -> None:
        """Nothing."""

    def observe(self, amount: float) -> None:
        """Nothing."""

    def track_inprogress(self) -> AbstractContextManager[None]:
        """A block that counts nothing."""
        return _NOTHING


_NOTHING = nullcontext()
_UNRECORDED = _Unrecorded()


@cache
def labeled(metric: Metric, *labels: str) -> Any:
    """A metric's child for these label values, looked up once (labels() is slow-ish); one
    that records nothing when this process's metrics are not served (`RECORDING`)."""
    if not RECORDING:
        return _UNRECORDED
    return metric.labels(*labels)


def record(on: bool) -> None:
    """Record metrics in this process, or stop (tests read them in-process)."""
    global RECORDING
    RECORDING = on
    labeled.cache_clear()


class RedisState:
    """Scrape-time gauges from Redis: queue depth and breaker state per endpoint."""

    def __init__(self, redis_url: str, namespace: str, endpoints: list[str]) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2)
        self.keys = Keys(namespace)
        self.endpoints = endpoints

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("batchyard_queue_depth", "Messages waiting", labels=["queue"])
        breaker = GaugeMetricFamily(
            "batchyard_breaker_open", "1 when the endpoint's breaker is open", labels=LABEL
        )
        try:
            for name in self.endpoints:
                # One series per endpoint: the sum of its lanes.
                pipe = self.client.pipeline(transaction=False)
                for lane in endpoint_queues(name):
                    pipe.llen(self.keys.queue(lane))
                waiting = sum(int(n) for n in pipe.execute())
                depth.add_metric([queue_name(name)], float(waiting))
                state = self.client.hget(self.keys.health(name), "state")
                breaker.add_metric([name], 1.0 if state == b"open" else 0.0)
        except redis.RedisError:
            return
        yield depth
        yield breaker


def serve_metrics(port: int, redis_url: str, namespace: str, endpoints: list[str]) -> Any:
    """Serve the children's metrics plus Redis state on 127.0.0.1:port (a daemon thread)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(RedisState(redis_url, namespace, endpoints))
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server
