"""Who is calling (a bearer API key, or a dashboard session opened with one), and whether
they may change anything."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from producers.gateway.config import ApiKey
from producers.gateway.errors import ApiError
from producers.gateway.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionStore

#: Paths anyone on the network may read: liveness, Prometheus scrapes, the login page.
PUBLIC = frozenset({"/healthz", "/metrics", "/login"})
#: Dashboard assets: no secrets in them, and the login page needs them.
PUBLIC_PREFIX = "/static/"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM = "application/x-www-form-urlencoded"

PRINCIPAL = web.RequestKey("principal", ApiKey)
SESSION = web.RequestKey("session", Session)


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

    def named(self, name: str) -> ApiKey | None:
        """The key called `name`: a session outlives nothing its key does not."""
        return next((key for _, key in self._keys if key.name == name), None)


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


def is_page(request: web.Request) -> bool:
    """A dashboard page: without a login, the browser is sent to the login form."""
    path = request.path
    return request.method == "GET" and (path in ("/", "/providers") or path.startswith("/batches/"))


def same_origin(request: web.Request) -> bool:
    """True only when the browser says the request comes from this gateway's own page.

    A missing `Origin` fails too: browsers send one with every POST (form or fetch), so a
    request without it came from no page of ours.
    """
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False
    return urlsplit(origin).netloc == request.host


async def _csrf_token(request: web.Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.content_type == _FORM:
        value = (await request.post()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    return token


def _forbidden_csrf() -> ApiError:
    return ApiError(
        403,
        f"Missing or wrong CSRF token: send the page's token as {CSRF_HEADER} "
        f"(or the {CSRF_FIELD} form field).",
        code="csrf_failed",
    )


async def _from_session(
    request: web.Request, ring: KeyRing, sessions: SessionStore
) -> tuple[ApiKey, Session] | None:
    session_id = request.cookies.get(COOKIE)
    session = await sessions.load(session_id) if session_id else None
    key = ring.named(session.key_name) if session is not None else None
    if key is None or session is None:
        return None
    if request.method not in _READ_METHODS and not (
        same_origin(request) and session.csrf_ok(await _csrf_token(request))
    ):
        raise _forbidden_csrf()
    return key, session


def auth_middleware(ring: KeyRing, sessions: SessionStore) -> Middleware:
    """401 without a known key or session (dashboard pages redirect to the login form),
    403 when a read-only key tries to change something or a session request lacks its
    CSRF token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC or request.path.startswith(PUBLIC_PREFIX):
            return await handler(request)
        header = request.headers.get("Authorization")
        token = bearer_token(header)
        key = ring.identify(token) if token else None
        if header is None and (found := await _from_session(request, ring, sessions)):
            key, request[SESSION] = found
        if key is None:
            if header is None and is_page(request):
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
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
