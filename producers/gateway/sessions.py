"""Dashboard sessions: browsers cannot send a bearer header when they navigate, so logging in
with an API key opens a session whose random id travels in an HttpOnly cookie instead.

Only the key's *name* is stored, under the sha256 of the session id; the key itself is never
kept or echoed. Each session has its own CSRF token, which every state-changing request made
with the cookie must carry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from producers.gateway.views import text
from workers.protocol.gateway import GatewayKeys

COOKIE = "batchyard_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: which key it acts as, and its CSRF token."""

    digest: str
    key_name: str
    csrf: str
    created_at: float

    def __repr__(self) -> str:
        return f"Session(key_name={self.key_name!r}, created_at={self.created_at:.0f})"

    def csrf_ok(self, token: str | None) -> bool:
        """Does `token` match this session's CSRF token (constant time)?"""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions in Redis with a fixed lifetime, shared by every gateway."""

    def __init__(self, redis: aioredis.Redis, keys: GatewayKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def create(self, key_name: str) -> tuple[str, Session]:
        """A new session for the key: (the id to put in the cookie, the session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(_digest(session_id), key_name, secrets.token_urlsafe(32), time.time())
        name = self.keys.session(session.digest)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            name,
            mapping={"key": key_name, "csrf": session.csrf, "created_at": session.created_at},
        )
        pipe.expire(name, self.ttl_s)
        await pipe.execute()
        return session_id, session

    async def load(self, session_id: str) -> Session | None:
        """The live session with this id, else None."""
        if not 20 <= len(session_id) <= 100:
            return None
        digest = _digest(session_id)
        raw = await self.redis.hgetall(self.keys.session(digest))
        fields = {text(k): text(v) for k, v in raw.items()}
        if "key" not in fields or "csrf" not in fields:
            return None
        return Session(digest, fields["key"], fields["csrf"], float(fields.get("created_at", 0)))

    async def delete(self, session: Session) -> None:
        """Log out: the cookie stops working at once, on every gateway."""
        await self.redis.delete(self.keys.session(session.digest))

    def set_cookie(self, request: web.Request, response: web.StreamResponse, sid: str) -> None:
        """Hand the session id to the browser: script cannot read it, other sites cannot send
        it (SameSite=Strict), and it is only sent over TLS when the page came over TLS."""
        response.set_cookie(
            COOKIE,
            sid,
            max_age=self.ttl_s,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        """Tell the browser to forget the session cookie."""
        response.del_cookie(COOKIE, path="/")
