"""Import redis-py without the OpenTelemetry metrics SDK: importing this module does it (#22).

redis-py 8's `redis.observability.providers` imports `opentelemetry.sdk.metrics` at module
level, inside `try: ... except ImportError`, for an annotation only; where metrics are enabled
(redis-py's `OTelConfig`, which batchyard never sets up) it imports what it needs again. That
one import is ~90 modules (psutil and the SDK resources among them) and was ~60-130 ms of CPU
in every batchyard process. While `redis` imports here, `sys.modules` marks the SDK module
missing (the import system's documented `None` entry), so redis-py takes its fallback; the
mark is removed at once, and a later `import opentelemetry.sdk.metrics` works as usual.

Only the processes batchyard starts import this first (`batchyard.launch`, `workers.process`):
a program that imports batchyard's client imports redis-py as it always did.
"""

from __future__ import annotations

import sys

#: The module redis-py imports only for an annotation.
SDK_METRICS = "opentelemetry.sdk.metrics"


def import_redis() -> None:
    """Import `redis` with `SDK_METRICS` marked missing, unless either is imported already."""
    if "redis" in sys.modules or SDK_METRICS in sys.modules:
        return
    sys.modules[SDK_METRICS] = None  # type: ignore[assignment]
    try:
        import redis  # noqa: F401
    finally:
        if SDK_METRICS in sys.modules and sys.modules[SDK_METRICS] is None:
            del sys.modules[SDK_METRICS]


import_redis()
