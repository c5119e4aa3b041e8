"""The dashboard without a browser: login sessions, CSRF, read-only keys, tenant isolation,
escaping, and the data its pages show (in-process gateway, real redis-server, no workers)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient

from producers.gateway.dashboard import CSP
from producers.gateway.sessions import COOKIE
from schemas.result import Attempt, ErrorInfo, LLMResult, Usage
from schemas.structured import Issue, RoundRecord, StructuredRecord
from tests.integration.test_gateway_api import new_batch, settled
from tests.integration.test_gateway_support import (
    KEY_A,
    KEY_A_READ,
    KEY_B,
    KEY_OPS,
    api,
    auth,
    chat_line,
    gateway_config,
    jsonl,
)
from workers.protocol.keys import Keys
from workers.protocol.results import write_call
from workers.protocol.scripts import Lua, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
__all__ = ["api", "gateway_config"]  # fixtures used by name

Http = TestClient[Any, Any]
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


class Browser:
    """One logged-in browser: its cookie and the CSRF token its pages carry."""

    def __init__(self, client: Http, cookie: str, csrf: str) -> None:
        self.client = client
        self.headers = {"Cookie": f"{COOKIE}={cookie}"}
        self.csrf = csrf

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.client.get(path, headers=self.headers, allow_redirects=False, **kw)

    async def post(self, path: str, *, token: bool = True, origin: bool = True, **kw: Any) -> Any:
        """A post from the gateway's page: its Origin (as browsers send) and CSRF token."""
        headers = {**self.headers, **kw.pop("headers", {})}
        if origin:
            headers.setdefault("Origin", own_origin(self.client))
        if token and "data" not in kw:
            headers["X-CSRF-Token"] = self.csrf
        return await self.client.post(path, headers=headers, allow_redirects=False, **kw)


def own_origin(client: Http) -> str:
    """The gateway's origin, as a browser on its pages sends it."""
    return str(client.make_url("/").origin())


async def login(client: Http, key: str, next_path: str = "/") -> Browser:
    resp = await client.post(
        "/login",
        data={"api_key": key, "next": next_path},
        headers={"Origin": own_origin(client)},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    cookie = resp.cookies[COOKIE]
    client.session.cookie_jar.clear()  # each Browser sends its own cookie explicitly
    page = await client.get("/", headers={"Cookie": f"{COOKIE}={cookie.value}"})
    match = _CSRF.search(await page.text())
    assert match and match.group(1)
    return Browser(client, cookie.value, match.group(1))


def dead_letter(key: str, code: str, endpoint: str = "mock") -> bytes:
    request = {"custom_id": key, "messages": [{"role": "user", "content": "again"}]}
    route = [{"endpoint": endpoint}]
    return orjson.dumps({"status": "errored", "code": code, "request": request, "route": route})


def write_failures(
    redis_url: str,
    batch_id: str,
    rows: list[tuple[str, str, bool]],
    *,
    message: str | None = None,
    first_hop: str = "primary",
    routed: Callable[[str], str] = lambda key: "mock",
) -> None:
    """Results as workers write them: (key, error code, succeeded?) with dead letters; a
    failure's message is `message` (default: markup naming its code), its first hop
    `first_hop`."""
    items = []
    for key, code, ok in rows:
        if ok:
            result = LLMResult(custom_id=key, batch_id=batch_id, status="succeeded", output="ok")
            items.append((key, result, False, b""))
            continue
        result = LLMResult(
            custom_id=key,
            batch_id=batch_id,
            status="errored",
            error=ErrorInfo(code=code, message=message or f"<b>{code}</b> from upstream"),
            attempts=[
                Attempt(endpoint=first_hop, model="m", error="timeout", latency_ms=5),
                Attempt(endpoint="mock", model="m", error=code, latency_ms=7),
            ],
        )
        items.append((key, result, False, dead_letter(key, code, routed(key))))
    client = redis.Redis.from_url(redis_url)
    try:
        register(client, Lua.WRITE_RESULTS)(**write_call(Keys(), 3600, items))
    finally:
        client.close()


async def test_pages_need_a_login_and_the_key_never_leaves_the_form(
    api: Any, redis_url: str
) -> None:
    client = await api()
    # Given no session, pages send the browser to the login form (and keep where it was going),
    resp = await client.get("/providers?x=1", allow_redirects=False)
    location = urlsplit(resp.headers["Location"])
    assert resp.status == 303 and location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/providers?x=1"]}
    assert (await client.get("/ui/api/batches")).status == 401  # data stays JSON 401
    form = await client.get("/login")
    assert form.status == 200 and 'name="api_key"' in await form.text()
    assert form.headers["Content-Security-Policy"] == CSP
    # a wrong key gets the form again, without echoing what was typed,
    wrong = await client.post(
        "/login",
        data={"api_key": "sk-wrong-guess", "next": "/"},
        headers={"Origin": own_origin(client)},
    )
    assert wrong.status == 401
    assert "sk-wrong-guess" not in await wrong.text() and COOKIE not in wrong.cookies
    # and a right one a session cookie that is not the key and script cannot read.
    resp = await client.post(
        "/login",
        data={"api_key": KEY_A, "next": "/providers"},
        headers={"Origin": own_origin(client)},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/providers"
    set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    cookie = resp.cookies[COOKIE].value
    assert KEY_A not in set_cookie and len(cookie) >= 40
    browser = Browser(client, cookie, "")
    client.session.cookie_jar.clear()
    page = await browser.get("/providers")
    assert page.status == 200 and "tenant-a" in await page.text()
    assert KEY_A not in await page.text()
    # Nothing in Redis holds the key or the raw session id either.
    raw = redis.Redis.from_url(redis_url)
    try:
        for name in raw.scan_iter("batchyard:gw:session:*"):
            values = b"".join(raw.hgetall(name).values()).decode()
            assert KEY_A not in values and cookie not in values and cookie not in name.decode()
    finally:
        raw.close()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
async def test_login_never_redirects_off_the_gateway(api: Any, target: str) -> None:
    client = await api()
    resp = await client.post(
        "/login",
        data={"api_key": KEY_A, "next": target},
        headers={"Origin": own_origin(client)},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/"


async def test_cross_site_login_and_session_posts_are_refused(api: Any) -> None:
    client = await api()
    evil = {"Origin": "https://evil.example"}
    resp = await client.post("/login", data={"api_key": KEY_A}, headers=evil)
    assert resp.status == 403
    browser = await login(client, KEY_A)
    created = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    resp = await browser.post(f"/v1/batches/{created['id']}/cancel", headers=evil)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"


async def test_state_changes_with_a_session_need_the_csrf_token(api: Any, redis_url: str) -> None:
    client = await api()
    browser = await login(client, KEY_A)
    created = await new_batch(client, KEY_A, jsonl([chat_line("a"), chat_line("b")]))
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    # Without the token, or with another, nothing changes,
    for token in (None, "not-the-token"):
        headers = {"X-CSRF-Token": token} if token else {}
        resp = await browser.post(f"/v1/batches/{batch_id}/cancel", token=False, headers=headers)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"
    resp = await browser.post(f"/batches/{batch_id}/cancel", data={"csrf_token": "nope"})
    assert resp.status == 403
    assert (await client.get(f"/v1/batches/{batch_id}", headers=auth(KEY_A))).status == 200
    status = (await (await client.get(f"/v1/batches/{batch_id}", headers=auth(KEY_A))).json())[
        "status"
    ]
    assert status == "in_progress"
    # while the page's form (token as a field) cancels and comes back to the batch page.
    resp = await browser.post(f"/batches/{batch_id}/cancel", data={"csrf_token": browser.csrf})
    assert resp.status == 303 and resp.headers["Location"] == f"/batches/{batch_id}"
    batch = await (await client.get(f"/v1/batches/{batch_id}", headers=auth(KEY_A))).json()
    assert batch["status"] in ("cancelling", "cancelled")
    # Bearer clients are unaffected: no cookie, no token needed.
    resp = await client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(KEY_A))
    assert resp.status == 200


async def test_a_read_only_key_sees_everything_but_cannot_change_anything(api: Any) -> None:
    client = await api()
    created = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    reader = await login(client, KEY_A_READ)
    page = await reader.get(f"/batches/{batch_id}")
    html = await page.text()
    assert page.status == 200 and "read-only" in html
    assert 'data-action="cancel"' not in html and 'data-action="retry"' not in html
    listing = await (await reader.get("/")).text()
    assert batch_id in listing
    for path in (f"/batches/{batch_id}/cancel", f"/batches/{batch_id}/retry-failed"):
        resp = await reader.post(path, data={"csrf_token": reader.csrf})
        assert resp.status == 403
    resp = await reader.post(f"/v1/batches/{batch_id}/cancel")
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "insufficient_permissions"
    writer = await login(client, KEY_A)
    assert 'data-action="cancel"' in await (await writer.get(f"/batches/{batch_id}")).text()


async def test_tenants_only_see_their_own_batches(api: Any) -> None:
    client = await api()
    created = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    batch_id = created["id"]
    other = await login(client, KEY_B)
    assert batch_id not in await (await other.get("/")).text()
    page = await other.get(f"/batches/{batch_id}")
    assert page.status == 404 and "text/html" in page.headers["Content-Type"]
    for path in (f"/ui/api/batches/{batch_id}", f"/v1/batches/{batch_id}/events"):
        assert (await other.get(path)).status == 404
    rows = await (await other.get("/ui/api/batches")).json()
    assert rows["data"] == []
    resp = await other.post(f"/batches/{batch_id}/cancel", data={"csrf_token": other.csrf})
    assert resp.status == 404


async def test_logout_ends_the_session_everywhere(api: Any) -> None:
    client = await api()
    browser = await login(client, KEY_A)
    assert (await browser.post("/logout", token=False)).status == 403  # needs the token too
    resp = await browser.post("/logout", data={"csrf_token": browser.csrf})
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert 'batchyard_session=""' in resp.headers["Set-Cookie"]
    assert (await browser.get("/")).status == 303
    assert (await browser.get("/ui/api/batches")).status == 401


async def test_values_are_escaped_and_nothing_loads_from_elsewhere(api: Any) -> None:
    client = await api()
    evil = "<script>alert(1)</script>"
    await new_batch(client, KEY_A, jsonl([chat_line("a")]), metadata={"note": evil})
    browser = await login(client, KEY_A)
    page = await browser.get("/")
    html = await page.text()
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert page.headers["Cache-Control"] == "no-store"
    # Every asset the page names is on the gateway, and served.
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets)
    for asset in {a for a in assets if a.startswith("/static/")}:
        resp = await client.get(asset)
        assert resp.status == 200, asset
    assert "<style" not in html and "style=" not in html
    assert re.search(r"<script(?! src=| type=\"application/json\")", html) is None


async def test_batch_page_shows_causes_failed_requests_with_hops_and_retries_them(
    api: Any, redis_url: str
) -> None:
    client = await api()
    lines = [chat_line(k) for k in ("ok1", "ok2", "bad1", "bad2", "bad3")]
    created = await new_batch(client, KEY_A, jsonl(lines))
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    write_failures(
        redis_url,
        batch_id,
        [
            ("ok1", "", True),
            ("ok2", "", True),
            ("bad1", "rate_limited", False),
            ("bad2", "rate_limited", False),
            ("bad3", "content_filter", False),
        ],
    )
    browser = await login(client, KEY_A)
    detail = await (await browser.get(f"/ui/api/batches/{batch_id}")).json()
    api_batch = await (await client.get(f"/v1/batches/{batch_id}", headers=auth(KEY_A))).json()
    assert api_batch["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    # (the page also says how many were never sent: none here)
    assert detail["request_counts"] == {**api_batch["request_counts"], "expired": 0, "cancelled": 0}
    assert detail["status"] == "completed" and detail["eta_s"] is None
    assert detail["causes"] == [
        {"code": "rate_limited", "count": 2},
        {"code": "content_filter", "count": 1},
    ]
    assert [f["key"] for f in detail["failures"]] == ["bad1", "bad2", "bad3"]
    hops = detail["failures"][0]["hops"]
    assert [(h["endpoint"], h["error"]) for h in hops] == [
        ("primary", "timeout"),
        ("mock", "rate_limited"),
    ]
    assert detail["timeline"][0][1] == 0 and detail["timeline"][-1][1] == 5
    page = await (await browser.get(f"/batches/{batch_id}")).text()
    assert "&lt;b&gt;rate_limited&lt;/b&gt; from upstream" in page
    assert "<li>primary (m)" in page and 'data-action="retry"' in page
    # The retry button re-queues the three dead letters.
    resp = await browser.post(
        f"/batches/{batch_id}/retry-failed", data={"csrf_token": browser.csrf}
    )
    assert resp.status == 303 and resp.headers["Location"].endswith("?retried=3")
    after = await (await client.get(f"/v1/batches/{batch_id}", headers=auth(KEY_A))).json()
    assert after["status"] == "in_progress" and after["request_counts"]["failed"] == 0
    notice = await (await browser.get(resp.headers["Location"])).text()
    assert "3 failed request(s) queued again." in notice


async def test_providers_show_limits_usage_latency_and_breaker(api: Any, redis_url: str) -> None:
    client = await api()
    raw = redis.Redis.from_url(redis_url)
    try:
        now = int(time.time())
        raw.hset(
            Keys().health("mock"),
            mapping={f"ok:{now}": 8, f"fail:{now}": 2, f"tok:{now}": 1200},
        )
        raw.lpush(Keys().latency("mock"), *[str(ms) for ms in range(10, 110, 10)])
        # A worker learned model m-1's buckets from an answer (as the release script does):
        # 412 of 600 requests left, full in 30 s; 50,000 of 60,000 tokens, full in 6 s.
        headers = (600, 412, 30_000, 60_000, 50_000, 6_000)
        register(raw, Lua.LIMIT_RELEASE)(
            keys=list(Keys().limit("mock", "m-1")),
            args=[time.time() * 1000, "l", 0, 0, 0, 1, 0, 0, *headers, 0, 0, 0, 0],
        )
    finally:
        raw.close()
    browser = await login(client, KEY_OPS)
    [mock] = (await (await browser.get("/ui/api/providers")).json())["data"]
    # the provider's limits as learned, per model: limit, what is left, when full again
    [learned] = mock["learned"]
    assert learned["model"] == "m-1"
    assert learned["requests"]["limit"] == 600 and 412 <= learned["requests"]["remaining"] < 420
    assert learned["tokens"]["limit"] == 60_000 and 0 < learned["tokens"]["full_in_s"] <= 6
    assert mock["endpoint"] == "mock" and mock["breaker"]["state"] == "closed"
    assert mock["success_rate"] == pytest.approx(0.8)
    assert mock["latency_ms"] == {"p50": 60.0, "p95": 100.0}
    assert mock["usage"]["rpm"] == pytest.approx(10 * 60 / mock["window_s"])
    assert mock["usage"]["tpm"] == pytest.approx(1200 * 60 / mock["window_s"], abs=0.1)
    page = await (await browser.get("/providers")).text()
    assert "80.0%" in page and "60 ms" in page and "closed" in page
    assert '<div data-model="m-1">' in page
    assert re.search(r'data-bucket="requests">41\d / 600 requests · full in [\d.]+ s<', page)
    assert re.search(r'data-bucket="tokens">[\d,]+ / 60,000 tokens · full in [\d.]+ s<', page)


async def test_providers_show_tenants_their_own_use_and_endpoints_only_to_operators(
    api: Any, redis_url: str
) -> None:
    # S5: endpoints are shared by every tenant; their names, models, limits and call counts
    # were shown to every key.
    client = await api()
    raw = redis.Redis.from_url(redis_url)
    try:
        now = int(time.time())
        raw.hset(Keys().health("mock"), mapping={f"ok:{now}": 8, f"fail:{now}": 2})
    finally:
        raw.close()
    lines = [chat_line(k) for k in ("a1", "a2", "a3")]
    batch_id = (await settled(client, KEY_A, (await new_batch(client, KEY_A, jsonl(lines)))["id"]))[
        "id"
    ]
    write_failures(redis_url, batch_id, [("a1", "", True), ("a2", "rate_limited", False)])
    # Given tenant A's write key and its read-only key, and tenant B's key,
    for key in (KEY_A, KEY_A_READ, KEY_B):
        browser = await login(client, key)
        # the page shows no endpoint: not its name, provider, model, limits or calls,
        page = await (await browser.get("/providers")).text()
        assert "data-endpoint" not in page and "80.0%" not in page and "Calls ok" not in page
        data = await (await browser.get("/ui/api/providers")).json()
        assert data["data"] == [] and "mock" not in orjson.dumps(data["usage"]).decode()
        resp = await browser.get("/ui/events/providers?interval=0.05")
        event = await _first_event(resp)
        assert event["data"] == [] and "data-endpoint" not in event["html"]["rows"]
        # but its own tenant's work: A's batch is counted for A's keys only.
        usage = data["usage"]
        mine = key != KEY_B
        assert usage["tenant"] == ("tenant-a" if mine else "tenant-b")
        assert (usage["answered"], usage["failed"]) == ((2, 1) if mine else (0, 0))
        assert usage["running"] == (1 if mine else 0) and usage["pending"] == (1 if mine else 0)
    # An operator key sees every endpoint in detail.
    ops = await login(client, KEY_OPS)
    page = await (await ops.get("/providers")).text()
    assert 'data-endpoint="mock"' in page and "80.0%" in page
    [mock] = (await (await ops.get("/ui/api/providers")).json())["data"]
    assert mock["endpoint"] == "mock" and mock["success_rate"] == pytest.approx(0.8)


async def _first_event(resp: Any) -> Any:
    data = None
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = orjson.loads(line[6:])
            break
    resp.close()
    return data


async def test_the_list_streams_rows_over_server_sent_events(api: Any) -> None:
    client = await api()
    created = await new_batch(client, KEY_A, jsonl([chat_line("a")]))
    browser = await login(client, KEY_A)
    resp = await browser.get("/ui/events/batches?interval=0.05")
    assert resp.headers["Content-Type"] == "text/event-stream"
    event = data = None
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = orjson.loads(line[6:])
            break
    resp.close()
    assert event == "batches" and data is not None
    assert data["data"][0]["id"] == created["id"]
    assert f'data-batch-id="{created["id"]}"' in data["html"]


async def test_failed_requests_table_pages_and_filters_by_custom_id_and_endpoint(
    api: Any, redis_url: str
) -> None:
    # Given a batch whose 45 requests all failed, the even ones routed to `primary`,
    client = await api()
    keys = [f"r{i:02d}" for i in range(45)]
    created = await new_batch(client, KEY_A, jsonl([chat_line(k) for k in keys]))
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    write_failures(
        redis_url,
        batch_id,
        [(k, "timeout", False) for k in keys],
        routed=lambda key: "primary" if int(key[1:]) % 2 == 0 else "backup",
    )
    browser = await login(client, KEY_A)

    async def listed(query: str) -> tuple[list[str], dict[str, Any]]:
        resp = await browser.get(f"/ui/api/batches/{batch_id}?{query}")
        assert resp.status == 200, await resp.text()
        detail = await resp.json()
        return [f["key"] for f in detail["failures"]], detail["failure_table"]

    # the table lists 20 a page, in custom_id order, and says where it is;
    first, table = await listed("")
    assert first == keys[:20] and table == {"matching": 45, "partial": False, "has_next": True}
    last, table = await listed("page=3")
    assert last == keys[40:] and not table["has_next"]
    # a custom_id filter matches a part of the id, an endpoint one the request's route,
    assert (await listed("custom_id=r1"))[0] == keys[10:20]
    odd, table = await listed("endpoint=backup&page=2")
    assert odd == keys[41:45:2] and table["matching"] == 22
    assert (await listed("endpoint=backup&custom_id=r0"))[0] == ["r01", "r03", "r05", "r07", "r09"]
    # and the page links to its neighbours with the filter kept.
    html = await (await browser.get(f"/batches/{batch_id}?custom_id=r&page=2")).text()
    assert f'href="/batches/{batch_id}?custom_id=r#failures">\u2190 Previous' in html
    assert f'href="/batches/{batch_id}?custom_id=r&amp;page=3#failures">Next' in html
    assert html.count('<td data-label="Request">') == 20 and "21\u201340 of 45" in html
    # A bad page is a 400 naming it.
    resp = await browser.get(f"/ui/api/batches/{batch_id}?page=0")
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "page"
    resp = await browser.get(f"/batches/{batch_id}?custom_id={'x' * 201}")
    assert resp.status == 400 and "custom_id takes at most 200" in await resp.text()


async def test_batch_list_searches_by_id_and_endpoint_a_page_at_a_time(api: Any) -> None:
    client = await api()
    ids = [(await new_batch(client, KEY_A, jsonl([chat_line("a")])))["id"] for _ in range(3)]
    other = (await new_batch(client, KEY_B, jsonl([chat_line("a")])))["id"]
    browser = await login(client, KEY_A)

    async def rows(query: str) -> tuple[list[str], str | None]:
        resp = await browser.get(f"/ui/api/batches?{query}")
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        return [r["id"] for r in data["data"]], data["next_after"]

    assert await rows(f"batch_id={ids[1][-6:]}") == ([ids[1]], None)
    assert await rows(f"batch_id={other}") == ([], None)  # another tenant's: not found
    assert await rows("endpoint=/v1/embeddings") == ([], None)
    newest = ids[::-1]
    page1, after = await rows("endpoint=/v1/chat/completions&limit=2")
    assert page1 == newest[:2] and after == newest[1]
    assert await rows(f"endpoint=/v1/chat/completions&limit=2&after={after}") == (
        newest[2:],
        None,
    )
    html = await (await browser.get(f"/?batch_id={ids[0]}")).text()
    assert f'data-batch-id="{ids[0]}"' in html and f'data-batch-id="{ids[1]}"' not in html
    assert f'value="{ids[0]}"' in html


async def test_batch_page_shows_details_files_and_health(api: Any, redis_url: str) -> None:
    client = await api()
    created = await new_batch(
        client, KEY_A, jsonl([chat_line("ok1"), chat_line("bad1")]), metadata={"team": "ml"}
    )
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    write_failures(redis_url, batch_id, [("ok1", "", True), ("bad1", "timeout", False)])
    browser = await login(client, KEY_A)
    html = await (await browser.get(f"/batches/{batch_id}")).text()
    assert "<code>/v1/chat/completions</code>" in html and "<dd>24h</dd>" in html
    assert created["input_file_id"] in html and "<code>team</code> = ml" in html
    assert '<li>mock <span class="breaker b-closed">closed</span></li>' in html
    # each link downloads the file with this session
    for kind in ("output", "errors"):
        href = f"/v1/files/file-{batch_id}-{kind}/content"
        assert f'href="{href}" download="{batch_id}_{kind}.jsonl"' in html
        resp = await browser.get(href)
        assert resp.status == 200 and (await resp.read()).count(b"\n") == 1


def structured_result(
    key: str, batch_id: str, rounds: list[list[tuple[str, str]]], tokens: tuple[int, int]
) -> LLMResult:
    """A finished structured request as the reviewer writes it: per round its errors (code,
    pointer); the last round is valid when it has none."""
    history = [
        RoundRecord(
            round=n,
            valid=not errors,
            errors=[Issue(pointer=p, message="m", code=c) for c, p in errors],
        )
        for n, errors in enumerate(rounds, 1)
    ]
    record = StructuredRecord(
        validator="json_schema",
        valid=history[-1].valid,
        errors=history[-1].errors,
        rounds=len(history),
        history=history,
    )
    return LLMResult(
        custom_id=key,
        batch_id=batch_id,
        status="succeeded",
        output="{}",
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        cost_usd=(tokens[0] + tokens[1]) * 1e-5,
        extra={"structured": record.model_dump(mode="json")},
    )


async def test_batch_page_shows_the_structured_output_report(api: Any, redis_url: str) -> None:
    # Given a batch of structured requests: one valid at once, one after a refine round, one
    # still invalid after two rounds,
    client = await api()
    lines = [chat_line(k) for k in ("s1", "s2", "s3")]
    batch_id = (await settled(client, KEY_A, (await new_batch(client, KEY_A, jsonl(lines)))["id"]))[
        "id"
    ]
    age = ("type", "/age")
    results = [
        structured_result("s1", batch_id, [[]], (100, 50)),
        structured_result("s2", batch_id, [[age], []], (300, 100)),
        structured_result("s3", batch_id, [[("json", "")], [age]], (200, 100)),
    ]
    write_results(redis_url, [(r.custom_id or "", r) for r in results])
    browser = await login(client, KEY_A)
    html = await (await browser.get(f"/batches/{batch_id}")).text()
    # then its page shows validity per round,
    assert "<h2>Structured output</h2>" in html
    assert (
        '<dd data-field="valid">2</dd>' in html and '<dd data-field="validity">66.7%</dd>' in html
    )
    cells = ("Round", "Answers", "Valid answers", "Answer validity", "Valid after round")
    row = r"\s*".join(rf'<td data-label="{c}" class="num">([\d.%]+)</td>' for c in cells)
    rounds = re.findall(row, html)
    assert rounds == [("1", "3", "1", "33.3%", "33.3%"), ("2", "2", "1", "50.0%", "66.7%")]
    # the most frequent errors over all rounds,
    errors = re.findall(r'<td data-label="Error"><code>([^<]*)</code></td>\s*'
                        r'<td data-label="Answers" class="num">(\d+)</td>', html)  # fmt: skip
    assert errors == [("type at /age", "2"), ("json", "1")]
    # and tokens and cost per valid answer (850 tokens, $0.0085 over 2 valid answers).
    assert '<dd data-field="tokens-per-valid">425</dd>' in html
    assert '<dd data-field="cost-per-valid">$0.0043</dd>' in html
    # A batch without structured requests has no such panel.
    plain = (
        await settled(
            client, KEY_A, (await new_batch(client, KEY_A, jsonl([chat_line("p")])))["id"]
        )
    )["id"]
    write_failures(redis_url, plain, [("p", "", True)])
    assert "data-structured" not in await (await browser.get(f"/batches/{plain}")).text()


def write_results(redis_url: str, rows: list[tuple[str, LLMResult]]) -> None:
    """Succeeded results as workers write them."""
    client = redis.Redis.from_url(redis_url)
    try:
        items = [(key, result, False, b"") for key, result in rows]
        register(client, Lua.WRITE_RESULTS)(**write_call(Keys(), 3600, items))
    finally:
        client.close()
