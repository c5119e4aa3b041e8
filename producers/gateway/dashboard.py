"""The live web dashboard at `/`: batch list, batch page, providers page, and the JSON and
event streams their script reads. Same auth as the API (a session from the login form, or a
bearer key); a read-only key sees everything but the buttons."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from producers.gateway import pages
from producers.gateway.auth import SESSION, principal
from producers.gateway.batches import cancel, page_limit, retry_failed
from producers.gateway.errors import ApiError, bad_request
from producers.gateway.events import interval_s, stream
from producers.gateway.insights import batch_detail, batch_summary, provider_stats, tenant_usage
from producers.gateway.listing import find_page
from producers.gateway.page_data import (
    BatchDetail,
    BatchSummary,
    EndpointStats,
    FailureFilter,
    ListFilter,
    TenantUsage,
    dumps,
)
from producers.gateway.state import gateway
from producers.gateway.views import BatchState

routes = web.RouteTableDef()

#: Nothing loads from anywhere but the gateway; no inline script or style runs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def viewer(request: web.Request) -> pages.Viewer:
    """The caller as the page header shows them, with their session's CSRF token."""
    session = request.get(SESSION)
    return pages.Viewer.of(principal(request), session.csrf if session is not None else "")


def json_response(data: object) -> web.Response:
    """The dashboard's JSON: its typed records, serialised as they are."""
    return web.json_response(data, dumps=dumps)


def html_response(body: str, status: int = 200) -> web.Response:
    """A page: never cached, since it shows one person's data."""
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


def _page_error(request: web.Request, error: ApiError) -> web.Response:
    page = pages.ErrorPage(viewer=viewer(request), status=error.status, message=error.message)
    return html_response(pages.render(page), error.status)


def list_filter(request: web.Request) -> ListFilter:
    """The batch list's search from the query; 400 naming a field that is too long."""
    return ListFilter(text_filter(request, "batch_id"), text_filter(request, "endpoint"))


async def _summaries(
    request: web.Request, after: str | None
) -> tuple[list[BatchSummary], str | None]:
    """The caller's newest batches matching the list's search, as rows, and the id to
    continue after."""
    gw = gateway(request)
    limit = page_limit(request, "25")
    states, next_after = await find_page(request, after, limit, list_filter(request))
    rows = [batch_summary(s, gw.app_config) for s in states]
    for state, row in zip(states, rows, strict=True):
        if state.core and not row.finished:
            await gw.timeline.record(state.id, row.started_at, row.done)
    return rows, next_after


@routes.get("/")
async def batches_page(request: web.Request) -> web.Response:
    """The batch list, with its search."""
    after = request.query.get("after") or None
    try:
        flt = list_filter(request)
        rows, next_after = await _summaries(request, after)
    except ApiError as exc:
        return _page_error(request, exc)
    pager = pages.Pager.after("/", after, next_after, older="Older batches →", keep=flt.query())
    page = pages.BatchesPage(
        viewer=viewer(request), rows=rows, after=after, pager=pager, search=flt
    )
    return html_response(pages.render(page))


async def _owned(request: web.Request) -> BatchState:
    return await gateway(request).owned_batch(request, request.match_info["batch_id"], "batch")


def _fragments(detail: BatchDetail) -> dict[str, str]:
    """Pre-rendered pieces the script swaps in, so it formats nothing itself."""
    counts = detail.request_counts
    return {
        "total": pages.fmt_int(counts.total),
        "completed": pages.fmt_int(counts.completed),
        "failed": pages.fmt_int(counts.failed),
        "cancelled": pages.fmt_int(counts.cancelled),
        "expired": pages.fmt_int(counts.expired),
        "percent": detail.percent_text,
        "causes": pages.cause_rows(detail.causes),
        "failures": pages.failure_rows(detail.failures),
        "files": pages.file_links(detail),
        "failures-range": pages.BatchPage(batch=detail).failures_range,
        "rate": pages.fmt_rate(detail.rate_per_s),
        "eta": pages.fmt_eta(detail.eta_s),
        "cost": pages.fmt_cost(detail.cost_usd),
    }


#: Longest filter text accepted (a custom_id, a batch id, an endpoint).
MAX_FILTER_CHARS = 200


def text_filter(request: web.Request, name: str) -> str:
    """A filter's text from the query ("" when absent); 400 naming it when too long."""
    value = request.query.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise bad_request(f"{name} takes at most {MAX_FILTER_CHARS} characters.", param=name)
    return value


def failure_filter(request: web.Request) -> FailureFilter:
    """The failed-requests table's filter and page from the query; 400 naming a bad one."""
    raw = request.query.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise bad_request("page must be an integer from 1 to 100000.", param="page")
    return FailureFilter(
        custom_id=text_filter(request, "custom_id"),
        endpoint=text_filter(request, "endpoint"),
        page=int(raw),
    )


@routes.get("/batches/{batch_id}")
async def batch_page(request: web.Request) -> web.Response:
    """One batch."""
    try:
        state = await _owned(request)
        flt = failure_filter(request)
    except ApiError as exc:
        return _page_error(request, exc)
    detail = await batch_detail(gateway(request), state, flt)
    notice = None
    if "retried" in request.query:
        notice = f"{request.query['retried']} failed request(s) queued again."
    page = pages.BatchPage(viewer=viewer(request), batch=detail, notice=notice)
    return html_response(pages.render(page))


@routes.post("/batches/{batch_id}/cancel")
async def cancel_action(request: web.Request) -> web.Response:
    """The cancel button (POST + CSRF token; 403 for read-only keys)."""
    batch_id = request.match_info["batch_id"]
    try:
        await cancel(request, batch_id)
    except ApiError as exc:
        return _page_error(request, exc)
    raise web.HTTPSeeOther(f"/batches/{batch_id}")


@routes.post("/batches/{batch_id}/retry-failed")
async def retry_action(request: web.Request) -> web.Response:
    """The retry-failed button: re-runs the batch's dead letters."""
    batch_id = request.match_info["batch_id"]
    try:
        retried, _ = await retry_failed(request, batch_id)
    except ApiError as exc:
        return _page_error(request, exc)
    raise web.HTTPSeeOther(f"/batches/{batch_id}?retried={retried}")


async def _providers(request: web.Request) -> tuple[TenantUsage, list[EndpointStats]]:
    """The caller's own usage, and every endpoint in detail only for an operator key."""
    gw, key = gateway(request), principal(request)
    usage = await tenant_usage(gw, key)
    return usage, (await provider_stats(gw, with_learned=True) if key.role == "operator" else [])


@routes.get("/providers")
async def providers_page(request: web.Request) -> web.Response:
    """The caller's usage; for operators, every endpoint's limits and health."""
    usage, stats = await _providers(request)
    page = pages.ProvidersPage(viewer=viewer(request), usage=usage, endpoints=stats)
    return html_response(pages.render(page))


@routes.get("/ui/api/batches")
async def batches_json(request: web.Request) -> web.Response:
    """The list page's data."""
    rows, next_after = await _summaries(request, request.query.get("after") or None)
    return json_response({"data": rows, "next_after": next_after})


@routes.get("/ui/api/batches/{batch_id}")
async def batch_json(request: web.Request) -> web.Response:
    """The batch page's data, with its tables pre-rendered."""
    state = await _owned(request)
    detail = await batch_detail(gateway(request), state, failure_filter(request))
    return json_response({**asdict(detail), "html": _fragments(detail)})


@routes.get("/ui/api/providers")
async def providers_json(request: web.Request) -> web.Response:
    """The providers page's data (`data` is empty unless the key is an operator's)."""
    usage, stats = await _providers(request)
    return json_response({"usage": usage, "data": stats})


@routes.get("/ui/events/batches")
async def batches_events(request: web.Request) -> web.StreamResponse:
    """The list page's rows whenever a status, count or cost changes."""
    after = request.query.get("after") or None
    every_s = interval_s(request, "1")
    page_limit(request, "25")  # a bad limit is a 400 before the stream starts

    last: Hashable = None
    html = ""

    async def poll() -> tuple[str, Any, Hashable]:
        nonlocal last, html
        rows, next_after = await _summaries(request, after)
        snapshot = tuple((r.id, r.status, r.request_counts, r.cost_usd) for r in rows)
        if snapshot != last:  # rows are only sent when this changed: render only then
            last, html = snapshot, pages.batch_rows(rows)
        return "batches", {"data": rows, "next_after": next_after, "html": html}, snapshot

    return await stream(request, every_s, poll)


@routes.get("/ui/events/providers")
async def providers_events(request: web.Request) -> web.StreamResponse:
    """The providers page's figures whenever anything in them changes."""
    every_s = interval_s(request, "2")

    async def poll() -> tuple[str, Any, Hashable]:
        usage, stats = await _providers(request)
        html = {"usage": pages.usage_block(usage), "rows": pages.provider_rows(stats)}
        return "providers", {"usage": usage, "data": stats, "html": html}, tuple(html.values())

    return await stream(request, every_s, poll)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "public, max-age=86400"


def setup(app: web.Application) -> None:
    """Serve the static files and send the security headers with every response."""
    app.router.add_static("/static/", pages.STATIC_DIR, name="static")
    app.on_response_prepare.append(_security_headers)
