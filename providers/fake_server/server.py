"""FakeServer: the OpenAI, Anthropic and Ollama HTTP APIs on 127.0.0.1, with faults on demand."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from providers.fake_server.anthropic_wire import AnthropicWire
from providers.fake_server.batch_state import BatchKnobs
from providers.fake_server.faults import Fault, FaultPlan
from providers.fake_server.limits import Algorithm, HeaderFormat, Outage, Refusal, ServerLimits
from providers.fake_server.ollama_wire import OllamaWire
from providers.fake_server.openai_wire import OpenAIWire
from providers.fake_server.vendor_batches import VendorBatches
from providers.fake_server.wire import BadRequest, Call, Reply, Wire
from providers.http import CUSTOM_ID_HEADER

HOST = "127.0.0.1"


#: When a request came in (its log record is written when it ends).
ARRIVED = web.RequestKey("arrived", float)
#: The parsed request body, kept when the server records bodies.
BODY = web.RequestKey("body", object)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it; `status` None: dropped, or abandoned by the client.

    `ts` is when the server finished with it (answered, dropped or abandoned); `arrived` is
    when it came in — what a limiter must keep under the limits.
    """

    ts: float
    path: str
    vendor: str
    model: str | None
    custom_id: str | None
    status: int | None
    fault: str
    arrived: float = 0.0
    #: The request body as parsed JSON, when the server keeps bodies (`record_bodies`).
    body: Any = None
    #: The body the server answered with, when it keeps bodies.
    reply: bytes | None = None


#: A scripted model: sees each chat request as the server parsed it and answers with a
#: reply text, a Fault (e.g. text plus `finish_reason: "length"`), or None for the default.
Responder = Callable[[Call], Fault | str | None]


class FakeServer:
    """A fake provider server for tests and local runs; binds 127.0.0.1 only.

    `faults` (a FaultPlan) scripts what the next requests get; `limits` (ServerLimits)
    enforces RPM/TPM as a provider does (token buckets, or a sliding window), announces them in
    the vendor's headers, and can add an outage or a concurrency cap; `limits.stats` counts
    what happened; `requests` logs every call in order.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        rpm: int | None = None,
        tpm: int | None = None,
        limit_window_s: float = 60.0,
        limit_algorithm: Algorithm = "bucket",
        limit_headers: HeaderFormat = "wire",
        max_in_flight: int | None = None,
        outage: Outage | None = None,
        latency_ms: float = 0.0,
        latency_jitter_ms: float = 0.0,
        seed: int | None = None,
        api_key: str | None = None,
        models: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        access_log: bool = False,
        max_log: int = 100_000,
        record_bodies: bool = False,
        responder: Responder | None = None,
        embedding_dimensions: int = 16,
        batches: BatchKnobs | None = None,
    ) -> None:
        self.port = port
        self.faults = FaultPlan(
            seed=seed, latency_ms=latency_ms, latency_jitter_ms=latency_jitter_ms
        )
        self.limits = ServerLimits(
            rpm=rpm,
            tpm=tpm,
            algorithm=limit_algorithm,
            window_s=limit_window_s,
            headers=limit_headers,
            max_in_flight=max_in_flight,
            outage=outage,
            clock=clock,
        )
        self._wires: dict[str, Wire] = {w.name: w for w in (OpenAIWire(), AnthropicWire())}
        self.api_key = api_key
        #: Models that exist; None accepts any name.
        self.models = models
        #: Keep each request's parsed body and the reply in its log record (tests assert the
        #: wire); off by default so long load runs keep a small log.
        self.record_bodies = record_bodies
        #: Answers successful chat requests that no scripted fault gave a text to.
        self.responder = responder
        #: The last `max_log` requests, oldest first.
        self.requests: deque[RequestRecord] = deque(maxlen=max_log)
        self.requests_seen = 0
        #: Chat requests that have come in, answered or not (the log fills when they end).
        self.requests_arrived = 0
        self._logged = asyncio.Event()
        self._access_log = access_log
        self.embedding_dimensions = embedding_dimensions
        self._runner: web.AppRunner | None = None
        #: The vendors' batch APIs (OpenAI Files + Batches, Anthropic Message Batches).
        self.batches = VendorBatches(batches or BatchKnobs(), self._key_ok)

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port> (Anthropic and Ollama base_url)."""
        if self._runner is None:
            raise RuntimeError("FakeServer is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-style base_url (with /v1)."""
        return self.url + "/v1"

    async def start(self) -> None:
        """Bind and serve; with port 0 the OS picks a free port, then `port` holds it."""
        app = web.Application(client_max_size=64 * 1024**2)
        dims = self.embedding_dimensions
        for wire in (OpenAIWire(dims), AnthropicWire(), OllamaWire(dims)):
            for path, kind in wire.paths.items():
                app.router.add_post(path, self._call_handler(wire, kind))
            app.router.add_get(wire.models_path, self._models_handler(wire))
        self.batches.add_routes(app)
        quiet: dict[str, Any] = {} if self._access_log else {"access_log": None}
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, **quiet)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def calls(
        self,
        *,
        path: str | None = None,
        custom_id: str | None = None,
        status: int | None = None,
    ) -> list[RequestRecord]:
        """The logged requests matching every filter given."""
        return [
            r
            for r in self.requests
            if (path is None or r.path == path)
            and (custom_id is None or r.custom_id == custom_id)
            and (status is None or r.status == status)
        ]

    async def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until `count` requests have been logged in all (a server may finish after
        its client has given up, e.g. on a client timeout)."""
        async with asyncio.timeout(timeout_s):
            while self.requests_seen < count:
                self._logged.clear()
                await self._logged.wait()

    def bodies(self, path: str, custom_id: str | None = None) -> list[Any]:
        """The bodies received on `path` (for one custom id), oldest first."""
        return [r.body for r in self.calls(path=path, custom_id=custom_id)]

    def _call_handler(
        self, wire: Wire, kind: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._chat(request, wire, kind)

        return handle

    def _models_handler(self, wire: Wire) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            custom_id = _custom_id(request)
            fault = self.faults.scripted(custom_id) or Fault()
            if fault.kind == "ok" and not self._key_ok(wire, request):
                fault = Fault(kind="auth")
            await self._delay(request, wire, None, fault, custom_id)
            names = self.models if self.models is not None else ["fake-model"]
            ok = wire.models(names)
            return await self._answer(request, wire, None, fault, ok, custom_id)

        return handle

    def _key_ok(self, wire: Wire, request: web.Request) -> bool:
        return self.api_key is None or wire.key(request.headers) == self.api_key

    async def _chat(self, request: web.Request, wire: Wire, kind: str) -> web.StreamResponse:
        request[ARRIVED] = time.time()
        self.requests_arrived += 1
        custom_id = _custom_id(request)
        busy = self.limits.busy()
        if busy is not None:
            return self._send(
                request, wire, None, self._refused(wire, None, busy), "busy", custom_id
            )
        self.limits.stats.enter()
        try:
            return await self._serve(request, wire, kind, custom_id)
        finally:
            self.limits.stats.leave()

    async def _serve(
        self, request: web.Request, wire: Wire, kind: str, custom_id: str | None
    ) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
            if self.record_bodies:
                request[BODY] = body
            call = wire.parse(body, request.headers, kind)
        except (orjson.JSONDecodeError, BadRequest) as exc:
            detail = str(exc) if isinstance(exc, BadRequest) else "body is not valid JSON"
            bad = wire.bad_request(detail)
            return self._send(request, wire, None, bad, "bad_request", custom_id)
        if not self._key_ok(wire, request):
            fault = Fault(kind="auth")
        elif self.models is not None and call.model not in self.models:
            fault = Fault(kind="not_found")
        else:
            scripted = self.faults.scripted(custom_id)
            if scripted is None:
                refusal = self.limits.refuse(call.budget_tokens)
                if refusal is not None:
                    reply = self._refused(wire, call, refusal)
                    return self._send(request, wire, call, reply, refusal.kind, custom_id)
            fault = scripted or self.faults.drawn() or Fault()
            if fault.kind == "ok" and fault.text is None and self.responder is not None:
                answered = self.responder(call)
                if isinstance(answered, str):
                    fault = fault.model_copy(update={"text": answered})
                elif answered is not None:
                    fault = answered
        await self._delay(request, wire, call, fault, custom_id)
        text = fault.text if fault.text is not None else self.faults.reply
        ok = wire.success(call, fault, call.last_user if text is None else text, None)
        ok.headers.update(self._announce(wire))
        return await self._answer(request, wire, call, fault, ok, custom_id)

    def _announce(self, wire: Wire) -> dict[str, str]:
        """The limit headers every answer carries, in the format `limits.headers` picks."""
        state = self.limits.state()
        if state is None:
            return {}
        fmt = self.limits.headers
        return (wire if fmt == "wire" else self._wires[fmt]).limit_headers(state)

    def _refused(self, wire: Wire, call: Call | None, refusal: Refusal) -> Reply:
        if refusal.kind == "busy":
            # A saturated local server (vLLM, llama.cpp): 503 with no limit headers.
            return wire.error("overloaded", call, Fault(kind="overloaded"))
        wait_s = refusal.retry_after_s or 0.0
        if refusal.kind == "outage" or call is None:
            return wire.rate_limited(call, Fault(kind="rate_limited", retry_after_s=wait_s), None)
        fault = Fault(
            kind="rate_limited",
            message=wire.limit_message(call, self.limits.enforced.state(), wait_s),
            retry_after_s=math.ceil(wait_s),
            retry_after_ms=math.ceil(wait_s * 1000) if wire.name == "openai" else None,
        )
        reply = wire.rate_limited(call, fault, None)
        reply.headers.update(self._announce(wire))
        return reply

    async def _answer(
        self,
        request: web.Request,
        wire: Wire,
        call: Call | None,
        fault: Fault,
        ok: Reply,
        custom_id: str | None,
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind == "drop":
            if request.transport is not None:
                request.transport.close()
            self._log(request, wire, call, None, kind, custom_id)
            return web.Response()
        if kind == "raw":
            reply = Reply(fault.status or 500, (fault.body or "").encode())
        elif kind in ("ok", "content_filter", "truncate", "cut"):
            reply = ok
        elif kind == "malformed":
            reply = wire.malformed()
        elif kind == "rate_limited":
            reply = wire.rate_limited(call, fault, None)
        else:
            reply = wire.error(kind, call, fault)
        reply.headers.update(fault.headers)
        if fault.body is not None:
            reply.body = fault.body.encode()
        if kind == "truncate":
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        if kind == "cut":
            return await self._cut(request, wire, call, reply, custom_id)
        return self._send(request, wire, call, reply, kind, custom_id)

    def _send(
        self,
        request: web.Request,
        wire: Wire,
        call: Call | None,
        reply: Reply,
        kind: str,
        custom_id: str | None,
    ) -> web.Response:
        self._log(request, wire, call, reply.status, kind, custom_id, self._kept(reply))
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    async def _cut(
        self,
        request: web.Request,
        wire: Wire,
        call: Call | None,
        reply: Reply,
        custom_id: str | None,
    ) -> web.StreamResponse:
        """Promise the whole body, send half of it, close: a connection lost mid-response."""
        self._log(request, wire, call, reply.status, "cut", custom_id, self._kept(reply))
        resp = web.StreamResponse(status=reply.status, headers=reply.headers)
        resp.content_type = reply.content_type
        resp.content_length = len(reply.body)
        await resp.prepare(request)
        await resp.write(reply.body[: len(reply.body) // 2])
        if request.transport is not None:
            request.transport.close()
        return resp

    async def _delay(
        self,
        request: web.Request,
        wire: Wire,
        call: Call | None,
        fault: Fault,
        custom_id: str | None,
    ) -> None:
        """Latency plus the fault's delay; a client hanging up meanwhile is logged `abandoned`."""
        delay_s = self.faults.latency_s() + fault.delay_ms / 1000
        if delay_s <= 0:
            return
        try:
            await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            self._log(request, wire, call, None, "abandoned", custom_id)
            raise

    def _kept(self, reply: Reply) -> bytes | None:
        return reply.body if self.record_bodies else None

    def _log(
        self,
        request: web.Request,
        wire: Wire,
        call: Call | None,
        status: int | None,
        kind: str,
        custom_id: str | None,
        reply: bytes | None = None,
    ) -> None:
        model = call.model if call is not None else None
        now = time.time()
        arrived = request.get(ARRIVED, now)
        record = RequestRecord(
            now,
            request.path,
            wire.name,
            model,
            custom_id,
            status,
            kind,
            arrived,
            request.get(BODY),
            reply,
        )
        self.requests.append(record)
        self.requests_seen += 1
        self._logged.set()


def _custom_id(request: web.Request) -> str | None:
    raw = request.headers.get(CUSTOM_ID_HEADER)
    return unquote(raw) if raw is not None else None
