"""A lean HTTP/1.1 client for the worker's provider calls (#22): keep-alive connections on
`asyncio.Protocol`, request heads built once per (method, URL, static headers).

aiohttp's client spent ~25 % of a worker's CPU per request on objects a provider call does not
need (ClientRequest/ClientResponse, payload and stream objects, a CIMultiDict of the request's
headers, timers). Here a call is one `transport.write` of a pre-built head, its Content-Length
(and custom-id) and the body, then one future resolved by `data_received` once
`providers.wire_parse` has read the whole response. aiohttp stays the client for everything
else (gateway, checks, uploads) and for calls this client does not take (`request_head`).

- Connections: one keep-alive pool per origin (scheme, host, port); at most `limit` in use at
  once over all origins, as aiohttp's `TCPConnector(limit=...)` counts them, later callers
  wait in order. An idle connection is dropped after `KEEPALIVE_S` (aiohttp's default).
  A connection goes back to the pool only after a whole response that allows reuse (HTTP/1.1,
  no `Connection: close`, nothing unasked-for after it): a cancelled or failed call (the
  caller's deadline, a batch cancel, shutdown) closes its connection.
- Retry: a reused connection the server closed before any byte of the answer (its idle
  timeout raced our request) is tried again once on a new connection, as urllib3 and httpx
  do; a connection that received any byte of the answer is never retried.
- TLS: `loop.create_connection(ssl=..., server_hostname=host)` with a verifying default
  context, built (and the CA certificates read) at the first https connection only.
- DNS: a host is looked up once per `DNS_TTL_S`, however many connections open at once, and
  its addresses are tried in turn (uvloop's `create_connection` has no happy eyeballs).
- Request headers: Accept-Encoding `gzip, deflate` and aiohttp's User-Agent, as aiohttp's
  session sent them, so vendors see the same request; gzip/deflate answers are decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import socket
import ssl
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from yarl import URL

from providers.wire_parse import ConnectionClosed, Reply, ResponseParser

#: Seconds an idle connection is kept (aiohttp's `keepalive_timeout` default).
KEEPALIVE_S = 15.0
#: Seconds a host's addresses are kept (the `ttl_dns_cache` workers gave aiohttp).
DNS_TTL_S = 300.0
#: Sent unless the caller sets them: what aiohttp 3's session sends (`default_headers` puts
#: in its `SERVER_SOFTWARE`).
DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "User-Agent": "Python/3.11 aiohttp/3"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    """Where a connection goes: the pool's key."""

    scheme: str
    host: str
    port: int


def _user_agent() -> str:
    """aiohttp's `SERVER_SOFTWARE`, read from its installed version without importing it."""
    try:
        version = importlib.metadata.version("aiohttp")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        return DEFAULT_HEADERS["User-Agent"]
    return f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{version}"


@functools.cache
def default_headers() -> dict[str, str]:
    """`DEFAULT_HEADERS` with aiohttp's User-Agent, read at the first request head."""
    return {**DEFAULT_HEADERS, "User-Agent": _user_agent()}


def request_head(method: str, url: str, headers: Mapping[str, str]) -> tuple[Origin, bytes] | None:
    """The origin and the head of a request up to its per-call headers (Content-Length,
    custom-id), or None where this client does not apply: not http(s), credentials in the
    URL, or a header aiohttp would refuse (CR, LF or NUL in a name or value)."""
    u = URL(url)
    host = u.raw_host
    if u.scheme not in _DEFAULT_PORTS or not host or u.raw_user or u.raw_password:
        return None
    port = u.port or _DEFAULT_PORTS[u.scheme]
    shown = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[u.scheme]:
        shown = f"{shown}:{port}"
    lines = [f"{method} {u.raw_path_qs or '/'} HTTP/1.1", f"Host: {shown}"]
    given = {name.lower() for name in headers}
    if "host" in given or "content-length" in given or "transfer-encoding" in given:
        return None
    defaults = [(k, v) for k, v in default_headers().items() if k.lower() not in given]
    for name, value in (*headers.items(), *defaults):
        if not name.isprintable() or ":" in name or " " in name or not value.isprintable():
            return None
        lines.append(f"{name}: {value}")
    return Origin(u.scheme, host, port), ("\r\n".join(lines) + "\r\n").encode()


def _retrieved(lookup: asyncio.Task[list[Any]]) -> None:
    """Mark a look-up's failure seen when every caller was cancelled before it ended."""
    if not lookup.cancelled():
        lookup.exception()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request on it at a time."""

    __slots__ = ("closed", "idle_since", "parser", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport has a Transport's methods but is not its subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: not reusable
            self.abort()
            return
        try:
            reply = self.parser.feed(data)
        except Exception as exc:
            self.waiter = None
            waiter.set_exception(exc)
            self.abort()
            return
        if reply is not None:
            self.waiter = None
            waiter.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close; `connection_lost` reads what the close means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self.waiter = None
            try:
                waiter.set_result(self.parser.eof())
            except Exception as err:
                waiter.set_exception(err)

    def exchange(
        self, data: bytes, head_only: bool, max_body: int | None = None
    ) -> asyncio.Future[Reply]:
        """Send one request; the future of its response (`BodyTooLarge` past `max_body`)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ConnectionClosed("connection closed while idle")
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        self.parser.expect(head_only, max_body)
        transport.write(data)
        return waiter

    def abort(self) -> None:
        """Close now, unsent bytes dropped: the connection is never used again."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class WirePool:
    """Keep-alive connections per origin, `limit` in use at once; one per event loop."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        #: host -> (when it expires, its look-up)
        self._dns: dict[str, tuple[float, asyncio.Task[list[Any]]]] = {}

    def __repr__(self) -> str:
        return f"<WirePool limit={self.limit} in_use={self._active}>"

    async def request(
        self,
        origin: Origin,
        data: bytes,
        head_only: bool,
        connect_timeout_s: float,
        max_body: int | None = None,
    ) -> Reply:
        """Send `data` (a whole request) to `origin` and read its whole response, whose body
        may be `max_body` bytes at most, as sent and decoded (`BodyTooLarge` past them: the
        connection is closed, the rest never read)."""
        if self._closed:
            raise RuntimeError("the HTTP connection pool is closed")
        if self._active < self.limit and not self._waiters:
            self._active += 1
        else:
            await self._wait_for_slot()
        conn: _Connection | None = None
        reply: Reply
        try:
            conn = self._idle_connection(origin)
            if conn is not None:
                try:
                    reply = await conn.exchange(data, head_only, max_body)
                except ConnectionClosed:  # closed before any byte: not read, send it once more
                    conn = None
            if conn is None:
                conn = await self._connect(origin, connect_timeout_s)
                reply = await conn.exchange(data, head_only, max_body)
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        finally:
            self._release_slot()
        if reply.keep_alive and not conn.closed and not conn.parser.pending and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.abort()
        return reply

    def close(self) -> None:
        """Close every idle connection; connections in use close as their calls end."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        # Oldest first (released in that order): those past KEEPALIVE_S are closed, not only
        # skipped, so the sockets a busy pool never reaches down to do not stay open.
        now = asyncio.get_running_loop().time()
        stale = 0
        while stale < len(idle) and (
            idle[stale].closed or now - idle[stale].idle_since > KEEPALIVE_S
        ):
            idle[stale].abort()
            stale += 1
        del idle[:stale]
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, origin: Origin, timeout_s: float) -> _Connection:
        """A new connection: the host's addresses tried in turn, within `timeout_s`."""
        loop = asyncio.get_running_loop()
        context = self._context() if origin.scheme == "https" else None
        hostname = origin.host if context is not None else None
        async with asyncio.timeout(timeout_s):
            failed: OSError | None = None
            for address in await self._addresses(origin.host, origin.port):
                try:
                    _, conn = await loop.create_connection(
                        _Connection, address, origin.port, ssl=context, server_hostname=hostname
                    )
                except OSError as exc:
                    failed = exc
                    continue
                return conn
        assert failed is not None
        raise failed

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The host's addresses, looked up once per `DNS_TTL_S` however many connections
        open at once (aiohttp's ttl_dns_cache); a failed look-up is not kept."""
        loop = asyncio.get_running_loop()
        entry = self._dns.get(host)
        if entry is None or entry[0] < loop.time():
            lookup = loop.create_task(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            lookup.add_done_callback(_retrieved)
            entry = (loop.time() + DNS_TTL_S, lookup)
            self._dns[host] = entry
        try:
            infos = await asyncio.shield(entry[1])
        except OSError:
            if self._dns.get(host) is entry:
                del self._dns[host]
            raise
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _context(self) -> ssl.SSLContext:
        """The verifying default context, made (CA certificates read) at first use."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed a slot as the cancel came: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the next caller
                return
        self._active -= 1
