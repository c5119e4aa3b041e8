"""Reaching Redis: wait for it to answer, and name it in logs without its password."""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit, urlunsplit

import redis
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_before_delay,
    stop_when_event_set,
    wait_exponential,
)

log = logging.getLogger("batchyard.redis")


def safe_url(url: str) -> str:
    """A Redis URL fit for logs: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def wait_for_redis(url: str, *, give_up_s: float, stop: threading.Event | None = None) -> None:
    """Block until Redis answers PING (or `stop` is set), logging one clear line per try.

    Tries again after 0.5 s, doubling up to 10 s; raises `ConnectionError` (no traceback
    chain) once the next try would start more than `give_up_s` after the first.
    """
    stopped = stop or threading.Event()

    def log_wait(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        log.warning("waiting for Redis at %s: %s (next try in %.1fs)", safe_url(url), exc, wait_s)

    def pause(seconds: float) -> None:
        stopped.wait(seconds)

    retrying = Retrying(
        retry=retry_if_exception_type(redis.RedisError),
        wait=wait_exponential(multiplier=0.5, min=0.5, max=10.0),
        stop=stop_before_delay(give_up_s) | stop_when_event_set(stopped),
        sleep=pause,
        before_sleep=log_wait,
    )
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        retrying(client.ping)
    except RetryError as exc:
        if stopped.is_set():
            return
        cause = exc.last_attempt.exception()
        raise ConnectionError(
            f"Redis at {safe_url(url)} unreachable for {give_up_s:.0f}s: {cause}"
        ) from None
    finally:
        client.close()
