"""HTTP plumbing the vendor adapters share: the base adapter and its config, its calls over the
lean client (`providers.wire`) or aiohttp, each answer read whole up to `max_response_mb`.
What an answer or a transport failure means is `providers.http_response`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypeVar, overload
from urllib.parse import quote

import orjson
from pydantic import AfterValidator, BaseModel, Field, SecretStr, TypeAdapter
from yarl import URL

from providers.base import CALLER_BOUNDS_TIME, HealthStatus, Provider, ProviderConfig
from providers.errors import (
    InvalidRequest,
    ProtocolError,
    ProviderError,
)
from providers.headers import RateLimits, rate_limits
from providers.http_response import (
    MIB,
    HTTPResponse,
    VendorError,
    error_for_status,
    translate_errors,
    vendor_error,
)
from providers.wire import Origin, WirePool, request_head
from providers.wire_parse import BodyTooLarge

if TYPE_CHECKING:  # imported where a session is made (`Provider.sessions`)
    import aiohttp

#: Sent with every call so fake servers, gateways and logs can tie a call to its request.
CUSTOM_ID_HEADER = "x-batchyard-custom-id"


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


#: Larger error bodies are not kept in results (the message still says what went wrong).
_BODY_KEPT = 8192


def _check_base_url(value: str) -> str:
    url = URL(value.strip())
    if url.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not url.host:
        raise ValueError("must name a host")
    if url.user or url.password:
        raise ValueError("must not contain credentials (use api_key)")
    if url.query_string or url.fragment:
        raise ValueError("must not have a query string or fragment")
    return value.strip().rstrip("/")


#: An http(s) URL with a host and no credentials, stored without its trailing slash.
BaseURL = Annotated[str, AfterValidator(_check_base_url)]


class HTTPConfig(ProviderConfig):
    """Options every HTTP adapter has; header values are secrets (gateways put keys there)."""

    base_url: BaseURL
    extra_headers: dict[str, SecretStr] = Field(default_factory=dict)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    send_custom_id: bool = True


class _Head(NamedTuple):
    """A request head for `wire`: what it was built from, and its bytes."""

    static: dict[str, str]
    origin: Origin
    prefix: bytes
    custom_id: bytes

    def __repr__(self) -> str:  # its headers and bytes hold the endpoint's key
        return f"<_Head {self.origin.scheme}://{self.origin.host}:{self.origin.port}>"


#: Heads kept per adapter (paths with ids in them, as vendor batch calls have, vary).
_WIRE_HEADS = 64
#: Characters a custom-id header value keeps as they are (the others are %-encoded).
_CUSTOM_ID_SAFE = "-_.~:@/+="
#: Methods aiohttp sends `Content-Length: 0` with when there is no body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class HTTPProvider(Provider):
    """An adapter that talks HTTP over the process's lean client (`wire`, set by workers)
    or its one shared aiohttp session."""

    options: HTTPConfig
    #: The worker's lean HTTP/1.1 client; None: every call goes through `session`.
    wire: WirePool | None = None

    def api_key(self) -> str | None:
        """The endpoint's key in clear text, for a request header only."""
        key = self.settings.api_key
        return key.get_secret_value() if key is not None else None

    def redact(self, text: str) -> str:
        """Remove secrets from text a server sent back (some echo keys in auth errors)."""
        secrets = [v.get_secret_value() for v in self.options.extra_headers.values()]
        secrets.append(self.api_key() or "")
        for secret in secrets:
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    def failure(self, resp: HTTPResponse, model: str = "") -> ProviderError:
        """The error a non-2xx answer means, carrying the vendor's JSON body (secrets removed)
        for error files that show it as sent: what the vendor's documented types and codes
        say (`classify`) first, the status second."""
        err = vendor_error(resp.body)
        message = self.describe(resp, err)
        exc = self.classify(resp, err, message, model) or error_for_status(message, resp)
        if len(resp.body) <= _BODY_KEPT:
            try:
                data = orjson.loads(self.redact(resp.body.decode("utf-8", "replace")))
            except orjson.JSONDecodeError:
                data = None
            if isinstance(data, dict):
                exc.body = data
        return exc

    def classify(
        self, resp: HTTPResponse, err: VendorError, message: str, model: str
    ) -> ProviderError | None:
        """The error the vendor's own types and codes name, beyond what the status says;
        None leaves it to the status. Each adapter reads its vendor's documentation here."""
        return None

    @overload
    def parse_body(self, resp: HTTPResponse, model: type[M]) -> tuple[dict[str, Any], M]: ...
    @overload
    def parse_body(self, resp: HTTPResponse, model: TypeAdapter[T]) -> tuple[dict[str, Any], T]: ...
    def parse_body(
        self, resp: HTTPResponse, model: type[BaseModel] | TypeAdapter[Any]
    ) -> tuple[dict[str, Any], Any]:
        """A success body as received, and the fields batchyard reads from it checked against
        the vendor's documented shape (a model, or a type adapter of typed dicts); ProtocolError
        when it is neither JSON nor that shape."""
        try:
            with translate_errors(self.endpoint):
                data = orjson.loads(resp.body)
                if not isinstance(data, dict):
                    raise ProtocolError(
                        f"endpoint {self.endpoint!r}: the answer is not a JSON object"
                    )
                if isinstance(model, TypeAdapter):
                    # its validator itself: TypeAdapter.validate_python's Python wrapper
                    # took 0.8 us of the 1.9 it cost a chat answer (#22)
                    return data, model.validator.validate_python(data)
                return data, model.model_validate(data)
        except ProtocolError as exc:
            exc.status = resp.status
            raise

    def base_headers(self, custom_id: str | None = None) -> dict[str, str]:
        """Content type, configured extra headers and the custom-id header."""
        headers = self._shared_headers.copy()
        if custom_id is not None and self.options.send_custom_id:
            headers[CUSTOM_ID_HEADER] = quote(custom_id, safe=_CUSTOM_ID_SAFE)
        return headers

    def vendor_headers(self) -> dict[str, str]:
        """What the vendor wants on every call after the shared headers (auth, API version);
        read once per adapter, so it may only depend on the options."""
        return {}

    def headers(self, custom_id: str | None = None) -> dict[str, str]:
        """Every header of a call: the shared ones, then the vendor's."""
        headers = self.base_headers(custom_id)
        headers.update(self._vendor_headers)
        return headers

    # The options do not change once the adapter is built, so neither do these: building
    # them (secrets unwrapped, dicts merged) per call was a step of every request (#22).
    @cached_property
    def _shared_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update({k: v.get_secret_value() for k, v in self.options.extra_headers.items()})
        return headers

    @cached_property
    def _vendor_headers(self) -> dict[str, str]:
        return self.vendor_headers()

    @cached_property
    def _timeout(self) -> aiohttp.ClientTimeout:
        import aiohttp  # a session exists: it is imported

        timeout_s = self.settings.timeout_s
        return aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(self.options.connect_timeout_s, timeout_s)
        )

    @cached_property
    def _connect_timeout(self) -> aiohttp.ClientTimeout:
        """`_timeout` without its total, for calls whose caller holds that bound: aiohttp's
        total timer was a loop timer armed and cancelled per call (#22)."""
        import aiohttp

        return aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.sock_connect)

    def describe(self, resp: HTTPResponse, err: VendorError) -> str:
        """One line for an error result: endpoint, status, vendor type/code and message."""
        kind = "/".join(x for x in (err.type, err.code) if x)
        text = f"endpoint {self.endpoint!r}: HTTP {resp.status}"
        if kind:
            text += f" {kind}"
        if err.message:
            text += f": {err.message}"
        return self.redact(text)

    async def send(
        self, method: str, path: str, headers: dict[str, str], payload: Any = None
    ) -> HTTPResponse:
        """One request over the process's lean client (`wire`) or else its shared aiohttp
        session, read completely, failures translated."""
        if self.wire is not None:
            head = self._wire_head(method, path, headers)
            if head is not None:
                return await self._send_wire(method, head, payload)
        if self.session is None:
            raise RuntimeError(
                f"{self!r} has no aiohttp session: pass the process's shared ClientSession"
            )
        data = orjson.dumps(payload) if payload is not None else None
        with translate_errors(self.endpoint, self.settings.timeout_s):
            async with self.session.request(
                method,
                self.options.base_url + path,
                data=data,
                headers=headers,
                timeout=self._connect_timeout if CALLER_BOUNDS_TIME.get() else self._timeout,
                allow_redirects=False,
            ) as raw:
                resp = HTTPResponse(raw.status, raw.headers, await _read(raw, self._max_body))
        return resp

    def post(self, path: str, custom_id: str | None, payload: Any) -> Awaitable[HTTPResponse]:
        """`send("POST", path, self.headers(custom_id), payload)`: a call's request. On the
        lean client its head (every header but the custom-id) is built once per path, so a
        call neither builds its headers' dict nor compares it with a cached head's (#22).
        Not a coroutine: it returns the one that sends, one frame fewer per call (#22)."""
        heads = self._post_heads
        if heads is None or self.wire is None:
            return self.send("POST", path, self.headers(custom_id), payload)
        if path in heads:
            head = heads[path]
        else:
            head = self._wire_head("POST", path, self.headers())
            if len(heads) < _WIRE_HEADS:
                heads[path] = head
        if head is None:  # a head `wire` does not take
            return self.send("POST", path, self.headers(custom_id), payload)
        if custom_id is not None and self.options.send_custom_id:
            # quoted, the value is printable ASCII, all `_wire_head` asks of a custom-id
            value = quote(custom_id, safe=_CUSTOM_ID_SAFE)
            line = f"{CUSTOM_ID_HEADER}: {value}\r\n".encode()
            head = _Head(head.static, head.origin, head.prefix, line)
        return self._send_wire("POST", head, payload)

    @cached_property
    def _post_heads(self) -> dict[str, _Head | None] | None:
        """`post`'s heads by path; None where an adapter's own `headers` may vary per call."""
        if type(self).headers is not HTTPProvider.headers:
            return None
        return {}

    def _wire_head(self, method: str, path: str, headers: dict[str, str]) -> _Head | None:
        """The request's head without its Content-Length, or None where `wire` does not
        apply; built once per (method, path) while the headers other than the custom-id stay
        the same, so a call only formats its custom-id line."""
        custom_id = headers.get(CUSTOM_ID_HEADER)
        if custom_id is not None and not custom_id.isprintable():
            return None
        key = (method, path)
        cached = self._wire_heads.get(key)
        if (
            cached is None
            or len(headers) != len(cached.static) + (custom_id is not None)
            or not cached.static.items() <= headers.items()
        ):
            static = {k: v for k, v in headers.items() if k != CUSTOM_ID_HEADER}
            built = request_head(method, self.options.base_url + path, static)
            if built is None:
                return None
            cached = _Head(static, built[0], built[1], b"")
            if len(self._wire_heads) < _WIRE_HEADS:
                self._wire_heads[key] = cached
        if custom_id is None:
            return cached
        line = f"{CUSTOM_ID_HEADER}: {custom_id}\r\n".encode()
        return _Head(cached.static, cached.origin, cached.prefix, line)

    async def _send_wire(self, method: str, head: _Head, payload: Any) -> HTTPResponse:
        assert self.wire is not None
        if payload is not None:
            body = orjson.dumps(payload)
            length = b"Content-Length: %d\r\n" % len(body)
        else:
            body = b""
            length = b"Content-Length: 0\r\n" if method in _BODY_METHODS else b""
        data = b"".join((head.prefix, length, head.custom_id, b"\r\n", body))
        connect_s = self._connect_s
        with translate_errors(self.endpoint, self.settings.timeout_s):
            request = self.wire.request(
                head.origin, data, method == "HEAD", connect_s, self._max_body
            )
            if CALLER_BOUNDS_TIME.get():
                reply = await request
            else:
                async with asyncio.timeout(self.settings.timeout_s):
                    reply = await request
        return HTTPResponse(reply.status, reply.headers, reply.body)

    @cached_property
    def _connect_s(self) -> float:
        return min(self.options.connect_timeout_s, self.settings.timeout_s)

    @cached_property
    def _max_body(self) -> int:
        """The endpoint's `max_response_mb` in bytes: the longest body read, decoded."""
        return int(self.settings.max_response_mb * MIB)

    @cached_property
    def _wire_heads(self) -> dict[tuple[str, str], _Head]:
        return {}

    def announced(self, resp: HTTPResponse) -> RateLimits | None:
        """The limits a response's headers state, for ProviderResponse.rate_limits; None
        unless they state an RPM or a TPM."""
        limits = rate_limits(resp.headers)
        if limits.requests.limit is None and limits.tokens.limit is None:
            return None
        return limits

    async def probe(self, path: str, headers: dict[str, str]) -> HealthStatus:
        """A health check: GET a cheap listing and report status and latency."""
        started = time.perf_counter()
        try:
            resp = await self.send("GET", path, headers)
        except ProviderError as exc:
            ok, detail = False, f"{exc.code}: {exc.message}"
        else:
            ok, detail = resp.ok, "" if resp.ok else self.describe(resp, vendor_error(resp.body))
        latency_ms = (time.perf_counter() - started) * 1000
        return HealthStatus(ok=ok, latency_ms=latency_ms, detail=self.redact(detail))


async def _read(raw: aiohttp.ClientResponse, limit: int) -> bytes:
    """An aiohttp response's body as it arrives (decoded, as aiohttp decodes it), `limit`
    bytes at most: `BodyTooLarge` past them, the rest unread (the connection is closed)."""
    parts: list[bytes] = []
    size = 0
    async for part in raw.content.iter_any():
        size += len(part)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(part)
    return b"".join(parts)


def reserved_params(params: Mapping[str, Any], reserved: frozenset[str], endpoint: str) -> None:
    """Refuse `params` that would overwrite what the adapter itself sends."""
    clash = sorted(reserved.intersection(params))
    if clash:
        raise InvalidRequest(
            f"endpoint {endpoint!r}: params may not set {', '.join(clash)} "
            "(use the request's own fields)"
        )
