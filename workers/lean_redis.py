"""Import redis-py without OpenTelemetry's metrics: importing this module does it (#22).

redis-py 8's `redis.observability.providers` imports `opentelemetry.sdk.metrics` at module
level, inside `try: ... except ImportError`, for an annotation only; where metrics are enabled
(redis-py's `OTelConfig`, which batchyard never sets up) it imports what it needs again. That
one import is ~90 modules (psutil and the SDK resources among them) and was ~60-130 ms of CPU
in every batchyard process. `redis.observability.metrics` does the same with the metrics API,
`opentelemetry.metrics` (~22 M instructions, ~5 ms), which only its collector uses. While
`redis` imports here, `sys.modules` marks both missing (the import system's documented `None`
entry), so redis-py takes its fallbacks; the marks are removed at once, and a later import of
either works as usual.

Only the processes batchyard starts import this first (`batchyard.launch`, `workers.process`):
a program that imports batchyard's client imports redis-py as it always did.
"""

from __future__ import annotations

import sys

#: The module redis-py imports only for an annotation.
SDK_METRICS = "opentelemetry.sdk.metrics"
#: The metrics API, which redis-py imports for its metrics collector only.
API_METRICS = "opentelemetry.metrics"


def import_redis() -> None:
    """Import `redis` with `SDK_METRICS` and `API_METRICS` marked missing, unless redis or
    either of them is imported already."""
    unused = (SDK_METRICS, API_METRICS)
    if "redis" in sys.modules or any(name in sys.modules for name in unused):
        return
    for name in unused:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import redis  # noqa: F401
    finally:
        for name in unused:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


import_redis()
