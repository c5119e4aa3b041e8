"""GET/POST /login and POST /logout: trade an API key for a dashboard session cookie.

The key is checked like a bearer key and then forgotten: neither the session, the cookie,
the page nor the log ever holds it.
"""

from __future__ import annotations

from aiohttp import web

from producers.gateway import pages
from producers.gateway.auth import SESSION, same_origin
from producers.gateway.dashboard import html_response
from producers.gateway.errors import ApiError
from producers.gateway.sessions import COOKIE
from producers.gateway.state import gateway

routes = web.RouteTableDef()


def safe_next(value: object) -> str:
    """Where to go after logging in: a path on this gateway, never another site."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(ch) < 32 for ch in value):
        return "/"
    return value


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    """The login form; a browser with a live session goes straight on."""
    gw = gateway(request)
    next_path = safe_next(request.query.get("next", "/"))
    session_id = request.cookies.get(COOKIE)
    session = await gw.sessions.load(session_id) if session_id else None
    if session is not None and gw.ring.named(session.key_name) is not None:
        raise web.HTTPSeeOther(next_path)
    return html_response(pages.render(pages.LoginPage(next_path=next_path)))


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    """Check the key; on success a fresh session (never the old one: no session fixation)."""
    gw = gateway(request)
    if not same_origin(request):
        raise ApiError(403, "Logins must come from this gateway's own page.", code="csrf_failed")
    form = await request.post()
    next_path = safe_next(form.get("next", "/"))
    try:
        await gw.rate.check(f"login@{request.remote or 'unknown'}", gw.config.login_per_min)
    except ApiError as exc:  # the form shows why, in words, not the API's JSON
        if exc.status != 429:
            raise
        wait = exc.headers.get("Retry-After", "60")
        message = f"Too many login attempts from this address: try again in {wait} s."
        page = pages.LoginPage(next_path=next_path, error=message)
        response = html_response(pages.render(page), status=429)
        response.headers["Retry-After"] = wait
        return response
    token = form.get("api_key")
    key = gw.ring.identify(token.strip()) if isinstance(token, str) and token.strip() else None
    if key is None:
        page = pages.LoginPage(next_path=next_path, error="Unknown API key.")
        return html_response(pages.render(page), status=401)
    session_id, _ = await gw.sessions.create(key.name)
    response = web.HTTPSeeOther(next_path)
    gw.sessions.set_cookie(request, response, session_id)
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """End the session everywhere (the auth middleware checked its CSRF token)."""
    gw = gateway(request)
    session = request.get(SESSION)
    if session is not None:
        await gw.sessions.delete(session)
    response = web.HTTPSeeOther("/login")
    gw.sessions.clear_cookie(response)
    raise response
