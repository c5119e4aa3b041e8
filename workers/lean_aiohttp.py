"""Import aiohttp without loading the system's CA certificates at import: importing this module
does it (#22).

`aiohttp.connector` builds its two default SSL contexts (verified and unverified) when it is
imported, and each reads the system CA bundle (`set_default_verify_paths`): ~45 ms of CPU in
every worker process, on the critical path of a small batch, whether or not any endpoint
uses https (the mock, a local model server and plain-http endpoints never do). While aiohttp
imports here, an SSL context's `set_default_verify_paths` is deferred instead: the context
reads the CA certificates the first time it wraps a connection (`wrap_bio`, which asyncio's
TLS uses, or `wrap_socket`), so what it verifies against is unchanged. Only the import's own
contexts are deferred: `ssl` is put back as it was before this module returns.

Only `workers.process` imports this first: a program that imports batchyard's client imports
aiohttp as it always did.
"""

from __future__ import annotations

import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

#: The `SSLContext` method whose work is deferred, and the methods that do it first.
LOAD = "set_default_verify_paths"
WRAPS = ("wrap_bio", "wrap_socket")

_lock = threading.Lock()


def import_aiohttp() -> None:
    """Import `aiohttp` with the CA certificates of its contexts deferred, unless imported."""
    if "aiohttp" in sys.modules:
        return
    own = ssl.SSLContext.__dict__.get(LOAD)  # None: inherited from `_ssl._SSLContext`
    setattr(ssl.SSLContext, LOAD, _defer)
    try:
        import aiohttp  # noqa: F401
    finally:
        if own is None:
            delattr(ssl.SSLContext, LOAD)
        else:
            setattr(ssl.SSLContext, LOAD, own)


def _defer(context: ssl.SSLContext) -> None:
    """`set_default_verify_paths` while aiohttp imports: done by the first wrap instead."""
    for name in WRAPS:
        setattr(context, name, _loading_first(context, name))


def _loading_first(context: ssl.SSLContext, name: str) -> Callable[..., Any]:
    def wrap(*args: Any, **kwargs: Any) -> Any:
        load(context)
        return getattr(context, name)(*args, **kwargs)

    return wrap


def load(context: ssl.SSLContext) -> None:
    """Read the CA certificates a deferred `context` has not read yet (once, in any thread)."""
    with _lock:
        if WRAPS[0] in vars(context):
            for name in WRAPS:
                delattr(context, name)
            context.set_default_verify_paths()


import_aiohttp()
