"""The dashboard's HTML, rendered on the server: every value goes through `esc`, pages carry
no inline script or style (the Content-Security-Policy forbids both), and the script in
`static/dashboard.js` only updates what is already there."""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from producers.gateway.config import ApiKey
from producers.gateway.sessions import CSRF_FIELD

#: Shown where a value is unknown.
DASH = "\u2013"

STATIC_DIR = Path(__file__).with_name("static")
#: Changes whenever a static file does, so browsers never run a stale script.
STATIC_VERSION = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(STATIC_DIR.iterdir()) if p.is_file())
).hexdigest()[:12]

#: Statuses in which the cancel button is offered.
CANCELLABLE = frozenset({"validating", "in_progress"})
#: Statuses in which failed requests may be retried from the dashboard.
RETRYABLE = frozenset({"completed", "expired"})


def esc(value: object) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def fmt_int(value: int | float) -> str:
    """12,345 (the script formats the same way)."""
    return f"{int(value):,}"


def fmt_rate(per_s: float) -> str:
    """Results per second."""
    return f"{per_s:,.1f}/s"


def fmt_eta(seconds: float | None) -> str:
    """1h 02m, 3m 05s, 12s, or a dash when unknown."""
    if seconds is None:
        return DASH
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def fmt_cost(usd: float) -> str:
    """Dollars, with cents of cents for small batches."""
    return f"${usd:,.2f}" if usd >= 100 else f"${usd:.4f}"


def fmt_time(epoch_s: float | None) -> str:
    """A <time> element in UTC; the script shows it in the viewer's time zone."""
    if not epoch_s:
        return DASH
    at = time.gmtime(epoch_s)
    iso, shown = time.strftime("%Y-%m-%dT%H:%M:%SZ", at), time.strftime("%Y-%m-%d %H:%M:%S", at)
    return f'<time datetime="{iso}">{shown} UTC</time>'


def fmt_ms(value: float | None) -> str:
    """Milliseconds, or a dash."""
    return DASH if value is None else f"{value:,.0f} ms"


def fmt_share(value: float | None) -> str:
    """A share as a percentage, or a dash."""
    return DASH if value is None else f"{100 * value:.1f}%"


def json_block(element_id: str, data: Any) -> str:
    """Data for the script, in a non-executable <script type="application/json">."""
    raw = orjson.dumps(data).decode().replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="{esc(element_id)}">{raw}</script>'


def status_badge(status: str) -> str:
    """A coloured status label."""
    return f'<span class="status s-{esc(status)}" data-field="status">{esc(status)}</span>'


def _csrf_input(csrf: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(csrf)}">'


def layout(
    title: str,
    body: str,
    *,
    page: str,
    key: ApiKey | None = None,
    csrf: str = "",
    attrs: dict[str, str] | None = None,
) -> str:
    """The whole document around a page's `body`."""
    v = STATIC_VERSION
    data = "".join(f' data-{esc(k)}="{esc(val)}"' for k, val in (attrs or {}).items())
    header = ""
    if key is not None:
        current = {"batches": "Batches", "providers": "Providers"}
        links = "".join(
            f'<a href="{href}"{" aria-current=page" if page_name == page else ""}>{label}</a>'
            for page_name, href, label in (
                ("batches", "/", current["batches"]),
                ("providers", "/providers", current["providers"]),
            )
        )
        role = (
            '<span class="badge" title="This key may view but not change anything">read-only</span>'
            if key.role == "read"
            else ""
        )
        header = f"""<header class="top">
  <a class="brand" href="/">batchyard</a>
  <nav aria-label="Main">{links}</nav>
  <div class="who"><span title="API key name · tenant">{esc(key.name)} · {esc(key.tenant)}</span>
    {role}
    <form method="post" action="/logout">{_csrf_input(csrf)}
      <button class="link">Log out</button></form>
  </div>
</header>"""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{esc(csrf)}">
<title>{esc(title)} · batchyard</title>
<link rel="icon" href="/static/favicon.svg?v={v}" type="image/svg+xml">
<link rel="stylesheet" href="/static/dashboard.css?v={v}">
<script src="/static/dashboard.js?v={v}" defer></script>
</head>
<body data-page="{esc(page)}"{data}>
{header}
<main>
{body}
</main>
</body>
</html>
"""


def login_page(next_path: str, error: str | None) -> str:
    """The form where a browser trades an API key for a session."""
    message = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = f"""<section class="login">
  <h1>batchyard</h1>
  <p>Paste an API key of this gateway to view your batches. A read-only key may view but
  not cancel or retry.</p>
  {message}
  <form method="post" action="/login">
    <input type="hidden" name="next" value="{esc(next_path)}">
    <label for="api_key">API key</label>
    <input id="api_key" name="api_key" type="password" autocomplete="off" required
           autofocus spellcheck="false">
    <button type="submit">Log in</button>
  </form>
  <p class="hint">The key is checked once and not stored: the session lasts until you log out
  or it expires.</p>
</section>"""
    return layout("Log in", body, page="login")


def error_page(status: int, message: str, key: ApiKey | None, csrf: str) -> str:
    """A readable error instead of the API's JSON, for pages."""
    body = f"""<section class="panel">
  <h1>{status}</h1>
  <p>{esc(message)}</p>
  <p><a href="/">Back to batches</a></p>
</section>"""
    return layout(f"Error {status}", body, page="error", key=key, csrf=csrf)


def _counts_cells(row: dict[str, Any]) -> str:
    c = row["request_counts"]
    return "".join(
        f'<td class="num" data-label="{label}" data-field="{field}">{fmt_int(c[field])}</td>'
        for field, label in (("total", "Total"), ("completed", "Completed"), ("failed", "Failed"))
    )


def progress_bar(row: dict[str, Any]) -> str:
    """A <progress> bar and its percentage."""
    pct = row["percent"]
    return (
        f'<progress max="100" value="{pct:.1f}" data-field="progress" '
        f'aria-label="Progress">{pct:.0f}%</progress>'
        f'<span class="pct" data-field="percent">{pct:.0f}%</span>'
    )


def batch_row(row: dict[str, Any]) -> str:
    """One row of the batch list (the script builds the same from events)."""
    bid = esc(row["id"])
    meta = ", ".join(f"{k}={v}" for k, v in sorted(row["metadata"].items()))
    note = f'<small class="meta">{esc(meta)}</small>' if meta else ""
    return f"""<tr data-batch-id="{bid}">
  <td data-label="Batch"><a href="/batches/{bid}">{bid}</a>{note}</td>
  <td data-label="Status">{status_badge(row["status"])}</td>
  <td data-label="Progress" class="progress">{progress_bar(row)}</td>
  {_counts_cells(row)}
  <td class="num" data-label="Rate" data-field="rate">{fmt_rate(row["rate_per_s"])}</td>
  <td class="num" data-label="ETA" data-field="eta">{fmt_eta(row["eta_s"])}</td>
  <td class="num" data-label="Cost" data-field="cost">{fmt_cost(row["cost_usd"])}</td>
  <td data-label="Created">{fmt_time(row["created_at"])}</td>
</tr>"""


def batches_page(
    rows: list[dict[str, Any]], next_after: str | None, after: str | None, key: ApiKey, csrf: str
) -> str:
    """The batch list: newest first, updated live."""
    body_rows = "\n".join(batch_row(r) for r in rows)
    empty = "" if rows else " hidden"
    older = f'<a class="button" href="/?after={esc(next_after)}">Older batches →</a>'
    pager = ('<a class="button" href="/">← Newest</a>' if after else "") + (
        older if next_after else ""
    )
    body = f"""<div class="title">
  <h1>Batches</h1>
  <span class="live" data-live>connecting…</span>
</div>
<p class="empty"{empty} data-empty>No batches yet. Create one with <code>POST /v1/batches</code>
(the OpenAI SDK works) and it appears here.</p>
<table class="batches cards">
<thead><tr><th>Batch</th><th>Status</th><th>Progress</th><th class="num">Total</th>
<th class="num">Completed</th><th class="num">Failed</th><th class="num">Rate</th>
<th class="num">ETA</th><th class="num">Cost</th><th>Created</th></tr></thead>
<tbody data-rows>
{body_rows}
</tbody>
</table>
<nav class="pager">{pager}</nav>"""
    attrs = {"after": after or ""}
    return layout("Batches", body, page="batches", key=key, csrf=csrf, attrs=attrs)


def _table(headers: Iterable[str], rows: Iterable[str], cls: str, attr: str, empty: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "\n".join(rows)
    return (
        f'<p class="empty" data-empty-for="{attr}"{" hidden" if body else ""}>{esc(empty)}</p>'
        f'<table class="{cls} cards"><thead><tr>{head}</tr></thead>'
        f"<tbody {attr}>{body}</tbody></table>"  # an empty tbody hides its table (CSS)
    )


def hops_list(hops: list[dict[str, Any]]) -> str:
    """The endpoints a request went through, in order, with each hop's error."""
    items = []
    for hop in hops:
        model = f" ({esc(hop['model'])})" if hop.get("model") else ""
        error = f' <span class="err">{esc(hop["error"])}</span>' if hop.get("error") else ""
        items.append(f"<li>{esc(hop.get('endpoint') or '?')}{model}{error}</li>")
    return f'<ol class="hops">{"".join(items)}</ol>' if items else DASH


def failure_row(row: dict[str, Any]) -> str:
    """One failed request."""
    return f"""<tr>
  <td data-label="Request"><code>{esc(row["key"])}</code></td>
  <td data-label="Kind">{esc(row["kind"])}</td>
  <td data-label="Status">{esc(row["status"])}</td>
  <td data-label="Code"><code>{esc(row["code"])}</code></td>
  <td data-label="Message">{esc(row["message"])}</td>
  <td data-label="Hops">{hops_list(row["hops"])}</td>
</tr>"""


def cause_row(cause: dict[str, Any]) -> str:
    """One error cause and how many requests it ended."""
    return (
        f'<tr><td data-label="Cause"><code>{esc(cause["code"])}</code></td>'
        f'<td class="num" data-label="Requests">{fmt_int(cause["count"])}</td></tr>'
    )


def _stat(label: str, field: str, value: str) -> str:
    return f'<div class="stat"><dt>{esc(label)}</dt><dd data-field="{field}">{value}</dd></div>'


def batch_page(detail: dict[str, Any], key: ApiKey, csrf: str, notice: str | None = None) -> str:
    """One batch: progress, pace, cost, throughput chart, error causes, failed requests."""
    bid = esc(detail["id"])
    status = detail["status"]
    c = detail["request_counts"]
    actions = ""
    if key.role == "write":
        actions = f"""<div class="actions">
  <form method="post" action="/batches/{bid}/cancel" data-action="cancel"
        {"" if status in CANCELLABLE else "hidden"}>
    {_csrf_input(csrf)}<button class="danger" type="submit">Cancel batch</button>
  </form>
  <form method="post" action="/batches/{bid}/retry-failed" data-action="retry"
        {"" if status in RETRYABLE and c["failed"] else "hidden"}>
    {_csrf_input(csrf)}<button type="submit">Retry failed requests</button>
  </form>
</div>"""
    flash = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
    validation = ""
    if detail["errors"]:
        rows = (
            f'<tr><td data-label="Line" class="num">{esc(e.get("line") or DASH)}</td>'
            f'<td data-label="Code"><code>{esc(e.get("code"))}</code></td>'
            f'<td data-label="Message">{esc(e.get("message"))}</td></tr>'
            for e in detail["errors"]
        )
        validation = (
            '<section class="panel"><h2>Validation errors</h2>'
            + _table(("Line", "Code", "Message"), rows, "errors", "data-validation", "")
            + "</section>"
        )
    partial = " (a sample)" if detail["causes_partial"] else ""
    none = "No failed requests."
    failure_headers = ("Request", "Kind", "Status", "Code", "Message", "Hops")
    body = f"""<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Batches</a> /</nav>
<div class="title">
  <h1 class="batch-id">{bid}</h1>
  {status_badge(status)}
  <span class="live" data-live>connecting…</span>
</div>
{flash}
{actions}
<section class="panel">
  <div class="progress wide">{progress_bar(detail)}</div>
  <dl class="stats">
    {_stat("Total", "total", fmt_int(c["total"]))}
    {_stat("Completed", "completed", fmt_int(c["completed"]))}
    {_stat("Failed", "failed", fmt_int(c["failed"]))}
    {_stat("Rate", "rate", fmt_rate(detail["rate_per_s"]))}
    {_stat("ETA", "eta", fmt_eta(detail["eta_s"]))}
    {_stat("Cost so far", "cost", fmt_cost(detail["cost_usd"]))}
    {_stat("Priority", "priority", esc(detail["priority"]))}
    {_stat("Created", "created", fmt_time(detail["created_at"]))}
  </dl>
</section>
<section class="panel">
  <h2>Throughput</h2>
  <div class="chart" data-chart role="img" aria-label="Results per second over time">
    <p class="hint">The chart needs JavaScript.</p>
  </div>
</section>
<div class="columns">
<section class="panel">
  <h2>Error causes{partial}</h2>
  {_table(("Cause", "Requests"), map(cause_row, detail["causes"]), "causes", "data-causes", none)}
</section>
<section class="panel wide-col">
  <h2>Failed requests</h2>
  {_table(failure_headers, map(failure_row, detail["failures"]), "failures", "data-failures", none)}
</section>
</div>
{validation}
{json_block("batch-data", detail)}"""
    attrs = {"batch-id": detail["id"], "role": key.role}
    return layout(detail["id"], body, page="batch", key=key, csrf=csrf, attrs=attrs)


def _usage(used: float | None, limit: int | None, unit: str) -> str:
    if limit is None:
        return f"{fmt_int(used)} {unit} · no limit" if used is not None else "no limit"
    share = min(1.0, (used or 0) / limit)
    return (
        f'<progress max="1" value="{share:.3f}"></progress> '
        f"<span>{fmt_int(used or 0)} / {fmt_int(limit)} {unit}</span>"
    )


def _fill(used: float, fill: float | None, limit: int | None, unit: str) -> str:
    if limit is None:
        return f"{fmt_int(used)} {unit} · no limit"
    share = fill or 0.0
    return (
        f'<progress max="1" value="{min(1.0, used / limit):.3f}"></progress> '
        f"<span>{fmt_int(used)} / {fmt_int(limit)} {unit} · bucket {100 * share:.0f}%</span>"
    )


def provider_row(p: dict[str, Any]) -> str:
    """One endpoint (the script builds the same from events)."""
    u, lim = p["usage"], p["limits"]
    state = p["breaker"]["state"]
    conc = (
        f"{fmt_int(u['in_flight'] or 0)} / {fmt_int(lim['max_concurrency'])}"
        if lim["max_concurrency"]
        else "no limit"
    )
    paused = '<span class="err">paused (429)</span>' if u["paused_until"] else ""
    calls = f"{fmt_int(p['calls']['ok'])} / {fmt_int(p['calls']['failed'])}"
    return f"""<tr data-endpoint="{esc(p["endpoint"])}">
  <td data-label="Endpoint"><strong>{esc(p["endpoint"])}</strong>
    <small class="meta">{esc(p["provider"])} {esc(" / ".join(p["models"]))}</small></td>
  <td data-label="Breaker"><span class="breaker b-{esc(state)}">{esc(state)}</span> {paused}</td>
  <td data-label="Success">{fmt_share(p["success_rate"])}</td>
  <td data-label="p50" class="num">{fmt_ms(p["latency_ms"]["p50"])}</td>
  <td data-label="p95" class="num">{fmt_ms(p["latency_ms"]["p95"])}</td>
  <td data-label="RPM" class="usage">{_usage(u["rpm"], lim["rpm"], "rpm")}</td>
  <td data-label="TPM" class="usage">{_fill(u["tpm"], u["tpm_fill"], lim["tpm"], "tpm")}</td>
  <td data-label="Concurrency" class="num">{conc}</td>
  <td data-label="Calls ok/failed" class="num">{calls}</td>
</tr>"""


def providers_page(stats: list[dict[str, Any]], key: ApiKey, csrf: str) -> str:
    """Every endpoint's limits, use, latency, success rate and breaker state."""
    rows = "\n".join(provider_row(p) for p in stats)
    body = f"""<div class="title">
  <h1>Providers</h1>
  <span class="live" data-live>connecting…</span>
</div>
<p class="hint">RPM and TPM count the calls and tokens of the breaker window (per endpoint),
scaled to a minute; "bucket" is how full the shared token bucket is (100% = workers are
being held back).
Success rate and breaker are over the same window; latencies over the last 500 calls.</p>
<table class="providers cards">
<thead><tr><th>Endpoint</th><th>Breaker</th><th>Success</th><th class="num">p50</th>
<th class="num">p95</th><th>RPM</th><th>TPM</th><th class="num">Concurrency</th>
<th class="num">Calls ok/failed</th></tr></thead>
<tbody data-rows>
{rows}
</tbody>
</table>"""
    return layout("Providers", body, page="providers", key=key, csrf=csrf)
