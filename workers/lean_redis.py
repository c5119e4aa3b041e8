"""Import redis-py without OpenTelemetry's metrics, and have it report its version without
reading package metadata: importing this module does it (#22).

redis-py 8's `redis.observability.providers` imports `opentelemetry.sdk.metrics` at module
level, inside `try: ... except ImportError`, for an annotation only; where metrics are enabled
(redis-py's `OTelConfig`, which batchyard never sets up) it imports what it needs again. That
one import is ~90 modules (psutil and the SDK resources among them) and was ~60-130 ms of CPU
in every batchyard process. `redis.observability.metrics` does the same with the metrics API,
`opentelemetry.metrics` (~22 M instructions, ~5 ms), which only its collector uses. While
`redis` imports here, `sys.modules` marks both missing (the import system's documented `None`
entry), so redis-py takes its fallbacks; the marks are removed at once, and a later import of
either works as usual.

redis-py also reads its own version (`redis.utils.get_lib_version`, sent to the server with
CLIENT SETINFO) with `importlib.metadata` at a process's first connection, which scans every
installed distribution: ~6-10 ms of CPU in each process, on the critical path of `batchyard
run` (its wait for its Redis) and of its worker (its first PING). The same version, which
redis-py 8 writes in `redis.__version__` too, is taken from there instead.

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
    """Import `redis` with `SDK_METRICS` and `API_METRICS` marked missing, and its version
    read from the package, unless redis or either of them is imported already."""
    unused = (SDK_METRICS, API_METRICS)
    if "redis" in sys.modules or any(name in sys.modules for name in unused):
        return
    for name in unused:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import redis.utils
    finally:
        for name in unused:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    redis.utils.get_lib_version = lib_version  # type: ignore[assignment]


def lib_version() -> str:
    """redis-py's version, as `redis.utils.get_lib_version` reads it from its metadata."""
    import redis

    return redis.__version__


import_redis()
