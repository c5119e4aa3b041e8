"""The dashboard's HTML, rendered on the server by Jinja2 with autoescaping always on: each
page is a typed page model rendered by its template (`templates/`), so a value reaches the
HTML only as escaped text and mypy checks what every template is given. Pages carry no
inline script or style (the Content-Security-Policy forbids both), and the script in
`static/dashboard.js` only updates what is already there."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple
from urllib.parse import quote, urlencode

import jinja2

from producers.gateway.config import ApiKey, Role
from producers.gateway.page_data import (
    FAILURES_PER_PAGE,
    BatchDetail,
    BatchSummary,
    Cause,
    EndpointStats,
    Failure,
    ListFilter,
    TenantUsage,
)
from producers.gateway.page_data import dumps as json_dumps
from producers.gateway.sessions import CSRF_FIELD
from schemas.request import URL_KINDS

#: Shown where a value is unknown.
DASH = "\u2013"

STATIC_DIR = Path(__file__).with_name("static")
TEMPLATE_DIR = Path(__file__).with_name("templates")
#: Changes whenever a static file does, so browsers never run a stale script.
STATIC_VERSION = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(STATIC_DIR.iterdir()) if p.is_file())
).hexdigest()[:12]

#: Statuses in which the cancel button is offered.
CANCELLABLE = frozenset({"validating", "in_progress"})
#: Statuses in which failed requests may be retried from the dashboard.
RETRYABLE = frozenset({"completed", "expired"})


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


def fmt_cost(usd: float | None) -> str:
    """Dollars, with cents of cents for small batches; "unknown" without a price."""
    if usd is None:
        return "unknown"
    return f"${usd:,.2f}" if usd >= 100 else f"${usd:.4f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds, or a dash."""
    return DASH if value is None else f"{value:,.0f} ms"


def fmt_share(value: float | None) -> str:
    """A share as a percentage, or a dash."""
    return DASH if value is None else f"{100 * value:.1f}%"


class UtcTime(NamedTuple):
    """An instant as a <time> element needs it: machine-readable and as shown."""

    iso: str
    shown: str


def utc(epoch_s: float | None) -> UtcTime | None:
    """The instant in UTC, or None when unknown (0 counts as unknown)."""
    if not epoch_s:
        return None
    at = time.gmtime(epoch_s)
    return UtcTime(time.strftime("%Y-%m-%dT%H:%M:%SZ", at), time.strftime("%Y-%m-%d %H:%M:%S", at))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        # Every template is HTML: escape always, not by file name.
        autoescape=True,
        # A name a template gets wrong fails the render (and the tests), not prints nothing.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    # Each filter goes by its function's name.
    filters = (fmt_int, fmt_rate, fmt_eta, fmt_cost, fmt_ms, fmt_share, utc)
    env.filters.update({f.__name__: f for f in filters})
    env.globals.update(
        DASH=DASH,
        CSRF_FIELD=CSRF_FIELD,
        NAV=(("batches", "/", "Batches"), ("providers", "/providers", "Providers")),
        static_version=STATIC_VERSION,
    )
    # `tojson` (the batch page's data for the script) escapes <, >, & and ' itself.
    env.policies["json.dumps_function"] = lambda value, **_: json_dumps(value)
    return env


ENV = _environment()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the header's key name and tenant, its role, and the CSRF token its
    forms carry (empty without a session, e.g. for a bearer key)."""

    name: str
    tenant: str
    role: Role
    csrf: str

    @classmethod
    def of(cls, key: ApiKey, csrf: str) -> Viewer:
        """The viewer acting as `key`."""
        return cls(key.name, key.tenant, key.role, csrf)

    @property
    def can_write(self) -> bool:
        """May cancel and retry (buttons are shown)."""
        return self.role != "read"

    @property
    def is_operator(self) -> bool:
        """May see the endpoints every tenant shares, in detail."""
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class Pager:
    """Links to the newest page and the next older one, where there are any."""

    newest_href: str | None = None
    older_href: str | None = None
    newest_label: str = "← Newest"
    older_label: str = "Older →"

    @classmethod
    def after(
        cls,
        path: str,
        after: str | None,
        next_after: str | None,
        older: str,
        keep: Mapping[str, str] | None = None,
    ) -> Pager:
        """Keyset paging by `?after=<last id shown>`, keeping the query's `keep` (a search)."""
        keep = dict(keep or {})
        return cls(
            newest_href=(f"{path}?{urlencode(keep)}" if keep else path) if after else None,
            older_href=f"{path}?{urlencode({**keep, 'after': next_after})}" if next_after else None,
            older_label=older,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """What every template's layout (`base.html`) reads."""

    #: `<body data-page>`: the script picks its behaviour by it; the nav marks it current; the
    #: page renders through the template of that name (`<name>.html`).
    name: ClassVar[str]
    #: The title of a page whose title does not depend on what it shows.
    fixed_title: ClassVar[str]
    viewer: Viewer | None = None

    @property
    def title(self) -> str:
        """The document title, before `· batchyard`: `fixed_title`, unless the page words it."""
        return self.fixed_title

    @property
    def csrf(self) -> str:
        """The session's CSRF token, also in `<meta name="csrf-token">` for the script."""
        return self.viewer.csrf if self.viewer else ""

    @property
    def body_data(self) -> Mapping[str, str]:
        """More `data-*` attributes of `<body>` for the script."""
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginPage(Page):
    """The login form."""

    name = "login"
    fixed_title = "Log in"
    next_path: str
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPage(Page):
    """An API error shown as a page."""

    name = "error"
    status: int
    message: str

    @property
    def title(self) -> str:
        """The status code."""
        return f"Error {self.status}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchesPage(Page):
    """The batch list."""

    name = "batches"
    fixed_title = "Batches"
    rows: Sequence[BatchSummary]
    #: The `after` this page was asked for (the script streams the same page).
    after: str | None
    pager: Pager
    search: ListFilter = field(default_factory=ListFilter)

    #: The endpoints a batch can be created for, offered by the search.
    endpoints: ClassVar[tuple[str, ...]] = tuple(sorted(URL_KINDS))

    @property
    def body_data(self) -> Mapping[str, str]:
        """The page's query (`after` and search), so the event stream sends the same rows."""
        query = self.search.query()
        if self.after:
            query["after"] = self.after
        return {"query": urlencode(query)}


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPage(Page):
    """One batch."""

    name = "batch"
    batch: BatchDetail
    #: A line after an action, e.g. how many requests a retry queued.
    notice: str | None = None

    @property
    def title(self) -> str:
        """The batch id."""
        return self.batch.id

    @property
    def body_data(self) -> Mapping[str, str]:
        """Which batch to follow, and whether the viewer may change it."""
        return {"batch-id": self.batch.id, "role": self.viewer.role if self.viewer else "read"}

    def failures_href(self, page: int) -> str:
        """This page with the failed-requests table at `page`, its filter kept."""
        flt = self.batch.failure_filter
        query = {"custom_id": flt.custom_id, "endpoint": flt.endpoint}
        query = {k: v for k, v in query.items() if v}
        if page > 1:
            query["page"] = str(page)
        path = f"/batches/{quote(self.batch.id, safe='')}"
        return f"{path}?{urlencode(query)}#failures" if query else f"{path}#failures"

    @property
    def failures_pager(self) -> Pager:
        """Previous and next pages of the failed-requests table."""
        page = self.batch.failure_filter.page
        return Pager(
            newest_href=self.failures_href(page - 1) if page > 1 else None,
            older_href=self.failures_href(page + 1) if self.batch.failure_table.has_next else None,
            newest_label="← Previous",
            older_label="Next →",
        )

    @property
    def failures_range(self) -> str:
        """Which of the matching failed requests are listed, e.g. "21-40 of 53"."""
        table, page = self.batch.failure_table, self.batch.failure_filter.page
        if not self.batch.failures:
            return ""
        first = (page - 1) * FAILURES_PER_PAGE + 1
        last = first + len(self.batch.failures) - 1
        of = f"{table.matching:,}+" if table.partial else f"{table.matching:,}"
        return f"{first:,}\u2013{last:,} of {of}"

    @property
    def can_cancel(self) -> bool:
        """The cancel button shows (the script shows and hides it by the same rule)."""
        return self.batch.status in CANCELLABLE

    @property
    def can_retry(self) -> bool:
        """The retry button shows: a finished batch with failed or expired requests (both
        are kept to be run again)."""
        counts = self.batch.request_counts
        return self.batch.status in RETRYABLE and counts.failed + counts.expired > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvidersPage(Page):
    """The caller's own use of the service, and, for an operator, every endpoint's limits
    and health (endpoints are shared by every tenant, so their names, models, limits and
    call counts are not for everyone)."""

    name = "providers"
    fixed_title = "Providers"
    usage: TenantUsage
    #: Empty unless the viewer is an operator.
    endpoints: Sequence[EndpointStats] = ()


def render(page: Page) -> str:
    """The whole HTML document of `page`."""
    return ENV.get_template(f"{page.name}.html").render(page=page)


def _rows(macro: str, items: Sequence[object], sep: str) -> str:
    """Rows rendered by a macro of `_rows.html`, as the pages render them."""
    row = getattr(ENV.get_template("_rows.html").module, macro)
    return sep.join(str(row(item)) for item in items)


def batch_rows(rows: Sequence[BatchSummary]) -> str:
    """The list's rows, for its event stream."""
    return _rows("batch_row", rows, "\n")


def cause_rows(causes: Sequence[Cause]) -> str:
    """The error-cause rows of a batch ("" for none: the script then shows the empty line)."""
    return _rows("cause_row", causes, "")


def file_links(detail: BatchDetail) -> str:
    """The batch's download links (its output and error files appear when it ends)."""
    return _rows("file_links", [detail], "")


def failure_rows(failures: Sequence[Failure]) -> str:
    """The failed-request rows of a batch ("" for none)."""
    return _rows("failure_row", failures, "")


def usage_block(usage: TenantUsage) -> str:
    """The providers page's figures of the caller's own tenant, for its event stream."""
    return _rows("usage_stats", [usage], "")


def provider_rows(endpoints: Sequence[EndpointStats]) -> str:
    """The providers page's rows, for its event stream."""
    return _rows("provider_row", endpoints, "\n")
