"""Bearer API keys: who is calling, and whether the key may change anything."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from producers.gateway.config import ApiKey
from producers.gateway.errors import ApiError

#: Paths anyone on the network may read: liveness and Prometheus scrapes.
PUBLIC = frozenset({"/healthz", "/metrics"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PRINCIPAL = web.RequestKey("principal", ApiKey)


def hash_token(token: str) -> str:
    """The sha256 hex digest stored in the config instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class KeyRing:
    """The configured keys, matched by digest in constant time."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, token: str) -> ApiKey | None:
        """The key whose digest matches `token`, comparing against every key every time."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, key in self._keys:
            if hmac.compare_digest(digest, stored):
                found = key
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def principal(request: web.Request) -> ApiKey:
    """The key the auth middleware identified for this request."""
    return request[PRINCIPAL]


def auth_middleware(ring: KeyRing) -> Middleware:
    """401 without a known key, 403 when a read-only key tries to change something."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        key = ring.identify(token) if token else None
        if key is None:
            message = (
                "Incorrect API key provided."
                if token
                else "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
            raise ApiError(
                401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )
        if key.role == "read" and request.method not in _READ_METHODS:
            raise ApiError(
                403,
                f"API key {key.name!r} is read-only: it may view objects but not create or "
                "cancel them.",
                code="insufficient_permissions",
            )
        request[PRINCIPAL] = key
        return await handler(request)

    return middleware
