"""The dashboard's templates with typed page models, branch by branch, without a gateway:
buttons by role and status, paging links, empty tables, limits and their absence."""

from __future__ import annotations

from dataclasses import replace

import jinja2
import pytest

from producers.gateway import pages
from producers.gateway.insights import _series, batch_summary
from producers.gateway.page_data import (
    BatchDetail,
    BatchInfo,
    BatchSummary,
    Breaker,
    Calls,
    Cause,
    Counts,
    EndpointLimits,
    EndpointStats,
    EndpointUsage,
    Failure,
    FailureFilter,
    FailureTable,
    Hop,
    Latency,
    LineProblem,
    ListFilter,
    RouteHealth,
    TenantUsage,
)
from producers.gateway.views import BatchState
from schemas.config import AppConfig
from workers.protocol.learned import LearnedBucket, LearnedScope

WRITER = pages.Viewer("svc-a", "tenant-a", "write", "tok-1")
READER = pages.Viewer("dash-a", "tenant-a", "read", "tok-2")
OPERATOR = pages.Viewer("ops", "ops", "operator", "tok-3")
USAGE = TenantUsage("tenant-a", 2, 30, 1000, 12, 5, 6000, "operational")


def summary(status: str = "in_progress", failed: int = 1, **extra: object) -> BatchSummary:
    fields: dict[str, object] = {
        "id": "batch_1",
        "status": status,
        "finished": status in ("completed", "failed", "expired", "cancelled"),
        "request_counts": Counts(total=2000, completed=999, failed=failed),
        "done": 999 + failed,
        "percent": 50.0,
        "rate_per_s": 12.34,
        "eta_s": 3725.0,
        "cost_usd": 0.5,
        "created_at": 1767225600,
        "started_at": 1767225600.0,
        "finished_at": None,
        "priority": "high",
        "metadata": {"team": "search"},
        "errors": (),
        **extra,
    }
    return BatchSummary(**fields)  # type: ignore[arg-type]


def detail(status: str = "in_progress", failed: int = 1, **extra: object) -> BatchDetail:
    return BatchDetail.of(
        summary(status, failed, **extra),
        causes=(Cause("rate_limited", 1),) if failed else (),
        causes_partial=False,
        failures=(
            Failure("q1", "chat", "errored", "rate_limited", "slow down", (Hop("a", "m", "x"),)),
        )
        if failed
        else (),
        timeline=((1767225600.0, 0.0), (1767225700.0, 1000.0)),
    )


def endpoint(name: str, limits: EndpointLimits, in_flight: int | None) -> EndpointStats:
    return EndpointStats(
        endpoint=name,
        provider="openai",
        models=("gpt-a", "gpt-b"),
        limits=limits,
        usage=EndpointUsage(120.0, 5000.0, 0.2, 0.5, in_flight, None),
        window_s=60.0,
        latency_ms=Latency(60.0, None),
        success_rate=None,
        calls=Calls(10, 2),
        breaker=Breaker("closed", None),
    )


def test_the_environment_escapes_everything_and_refuses_unknown_names() -> None:
    assert pages.ENV.from_string("{{ x }}").render(x="<b>'\"") == "&lt;b&gt;&#39;&#34;"
    with pytest.raises(jinja2.UndefinedError):
        pages.ENV.from_string("{{ page.nope }}").render(page=pages.LoginPage(next_path="/"))


def test_batch_buttons_follow_role_and_status() -> None:
    running = pages.render(pages.BatchPage(viewer=WRITER, batch=detail(), notice="Done."))
    assert 'data-action="cancel">' in running and 'data-action="retry" hidden>' in running
    assert 'value="tok-1"' in running and '<p class="notice" role="status">Done.</p>' in running
    finished = pages.render(pages.BatchPage(viewer=WRITER, batch=detail("completed")))
    assert 'data-action="cancel" hidden>' in finished and 'data-action="retry">' in finished
    clean = pages.render(pages.BatchPage(viewer=WRITER, batch=detail("completed", failed=0)))
    assert 'data-action="retry" hidden>' in clean
    read = pages.render(pages.BatchPage(viewer=READER, batch=detail()))
    assert "data-action" not in read and "read-only" in read and 'data-role="read"' in read


def test_batch_page_shows_stats_tables_and_validation_errors() -> None:
    problems = (LineProblem("empty_file", "no lines", None, None),)
    html = pages.render(
        pages.BatchPage(viewer=WRITER, batch=detail("failed", failed=0, errors=problems))
    )
    assert (
        '<dd data-field="eta">1h 02m</dd>' in html and '<dd data-field="rate">12.3/s</dd>' in html
    )
    assert '<dd data-field="priority">high</dd>' in html
    assert '<p class="empty" data-empty-for="data-failures">No failed requests.' in html
    assert '<td data-label="Line" class="num">\u2013</td>' in html and "no lines" in html
    assert '<time datetime="2026-01-01T00:00:00Z">2026-01-01 00:00:00 UTC</time>' in html
    # The script decides "no rows" by an empty fragment.
    assert pages.cause_rows(()) == "" and pages.failure_rows(()) == ""
    rows = pages.failure_rows(detail().failures)
    assert "<li>a (m) <span" in rows and '<td data-label="Kind">chat</td>' in rows


def test_batch_list_pages_and_says_when_it_is_empty() -> None:
    pager = pages.Pager.after("/", "batch_9", "batch_1&x", older="Older batches \u2192")
    html = pages.render(
        pages.BatchesPage(viewer=WRITER, rows=[summary()], after="batch_9", pager=pager)
    )
    assert 'href="/?after=batch_1%26x"' in html and '<a class="button" href="/">' in html
    assert '<p class="empty" hidden data-empty>' in html and 'data-query="after=batch_9"' in html
    assert '<small class="meta">team=search</small>' in html
    empty = pages.BatchesPage(viewer=WRITER, rows=[], after=None, pager=pages.Pager())
    html = pages.render(empty)
    assert '<p class="empty" data-empty>' in html and 'class="button"' not in html
    assert 'aria-current="page">Batches' in html


def test_providers_show_limits_or_their_absence() -> None:
    capped = endpoint("capped", EndpointLimits(600, 10_000, 40), 7)
    free = endpoint("free", EndpointLimits(None, None, None), None)
    html = pages.provider_rows([capped, free])
    assert "<span>120 / 600 rpm</span>" in html and "last 60 s 50%" in html
    assert '<td data-label="Concurrency" class="num">7 / 40</td>' in html
    assert "120 rpm \u00b7 no limit" in html and "5,000 tpm \u00b7 no limit" in html
    assert '<td data-label="Success">\u2013</td>' in html
    # The provider's own buckets, as learned per model; a dash where nothing was learned.
    assert '<td data-label="Provider\'s limits" class="learned">\u2013</td>' in html
    learned = LearnedScope("gpt-a", LearnedBucket(600, 412, 18.8), None)
    html = pages.provider_rows([replace(capped, learned=(learned,))])
    assert (
        '<div data-model="gpt-a"><small class="meta">gpt-a</small> <span data-bucket="requests">'
        "412 / 600 requests \u00b7 full in 18.8 s</span></div>"
    ) in html
    page = pages.render(pages.ProvidersPage(viewer=OPERATOR, usage=USAGE, endpoints=[capped]))
    assert 'data-page="providers"' in page and 'aria-current="page">Providers' in page
    assert 'data-endpoint="capped"' in page


def test_providers_page_shows_endpoints_to_operators_only() -> None:
    capped = endpoint("capped", EndpointLimits(600, 10_000, 40), 7)
    for viewer in (WRITER, READER):
        # even handed endpoints by mistake, a tenant's page does not show them
        html = pages.render(pages.ProvidersPage(viewer=viewer, usage=USAGE, endpoints=[capped]))
        assert "capped" not in html and "gpt-a" not in html and "600" not in html
        assert "shown to operator keys only" in html
        assert '<dd data-field="running">2</dd>' in html
        assert '<dd data-field="rate">6,000 req/min</dd>' in html
    assert OPERATOR.can_write and OPERATOR.is_operator and not WRITER.is_operator
    unlimited = pages.usage_block(replace(USAGE, rate_per_min=None, service="degraded"))
    assert '<dd data-field="rate">no limit</dd>' in unlimited and ">degraded<" in unlimited


def test_pages_without_a_viewer_have_no_header() -> None:
    html = pages.render(pages.ErrorPage(status=500, message="broken"))
    assert "<h1>500</h1>" in html and "Log out" not in html
    assert '<meta name="csrf-token" content="">' in html
    login = pages.render(pages.LoginPage(next_path="/providers", error="Unknown API key."))
    assert 'name="next" value="/providers"' in login and 'role="alert">Unknown' in login


# --- the truths a batch's figures must tell (insights -> page models -> HTML) -------------

FREE = AppConfig.model_validate({"endpoints": {"mock": {"provider": "mock"}}})
PRICED = AppConfig.model_validate(
    {"endpoints": {"mock": {"provider": "mock", "prices": {"*": {"input": 1, "output": 2}}}}}
)


def state(status: str, phase: str = "submitted", **core: object) -> BatchState:
    """Both records of a batch routed to `mock`, as the gateway and workers keep them."""
    record = {
        "status": status,
        "created_at": "1767225600",
        "route": '[{"endpoint": "mock"}]',
        "finished_at": "1767225700" if status != "in_progress" else "",
        **{k: str(v) for k, v in core.items()},
    }
    gw = {"phase": phase, "created_at": "1767225600", "endpoint": "/v1/chat/completions"}
    return BatchState("batch_1", gw, {k: v for k, v in record.items() if v != ""})


def test_a_cancelled_batch_has_its_own_colour_no_full_bar_and_no_cancelled_failures() -> None:
    # Given a batch of 100 cancelled after 30 answers (2 of them failed),
    cancelled = state("cancelled", total=100, completed=28, failed=72, n_errored=2, n_cancelled=70)
    row = batch_summary(cancelled, FREE, now=1767225800)
    # its counts keep the 70 unsent requests out of `failed`,
    assert row.request_counts == Counts(total=100, completed=28, failed=2, expired=0, cancelled=70)
    # the bar shows the 30% that were answered, in the cancelled colour,
    assert row.done == 30 and row.percent == 30.0 and row.percent_text == "30%"
    # and its pace counts the 30 answers over its 100 s, not the 70 it never sent.
    assert row.rate_per_s == pytest.approx(0.3) and row.eta_s is None
    html = pages.batch_rows([row])
    assert '<progress class="bar s-cancelled" max="100" value="30.0"' in html
    assert '<td class="num" data-label="Failed" data-field="failed">2</td>' in html
    assert 'data-field="unsent" title="Cancelled or expired before being sent">70<' in html
    # and the page says how many were cancelled.
    page = pages.render(pages.BatchPage(viewer=WRITER, batch=detail_of(row)))
    assert '<dd data-field="cancelled">70</dd>' in page and '<dd data-field="failed">2</dd>' in page


def test_expired_and_failed_batches_have_their_colours_and_no_full_bar() -> None:
    expired = batch_summary(
        state("completed", total=10, completed=6, failed=4, n_errored=1, n_expired=3), FREE
    )
    assert expired.status == "expired" and expired.percent == 70.0
    assert expired.request_counts.failed == 1 and expired.request_counts.expired == 3
    assert 'class="bar s-expired"' in pages.batch_rows([expired])
    # A batch that failed validation has no requests: an empty bar with a dash, not 100%.
    invalid = BatchState(
        "batch_2", {"phase": "failed", "created_at": "1767225600", "failed_at": "1767225601"}, {}
    )
    row = batch_summary(invalid, FREE)
    assert row.status == "failed" and row.finished and row.percent == 0.0
    html = pages.batch_rows([row])
    assert '<progress class="bar s-failed" max="100" value="0.0"' in html
    assert '<span class="pct" data-field="percent">\u2013</span>' in html
    assert "100%" not in html


def test_the_throughput_chart_counts_answers_not_cancelled_requests() -> None:
    row = batch_summary(state("cancelled", total=100, completed=30, failed=70, n_cancelled=70))
    series = _series(row, [(1767225650.0, 30)])
    # The cancel ended 70 requests at once; the chart ends at the 30 answered.
    assert series[-1] == (1767225700.0, 30.0)


def test_cost_is_unknown_without_a_price_not_zero() -> None:
    running = state("in_progress", total=10, completed=5)
    unpriced = batch_summary(running, FREE)
    assert unpriced.cost_usd is None
    assert '<td class="num" data-label="Cost" data-field="cost">unknown</td>' in (
        pages.batch_rows([unpriced])
    )
    page = pages.render(pages.BatchPage(viewer=READER, batch=detail_of(unpriced)))
    assert '<dd data-field="cost">unknown</dd>' in page and "$0.0000" not in page
    # A price anywhere on the batch's route makes a zero a real zero,
    assert batch_summary(running, PRICED).cost_usd == 0.0
    # and a cost already counted is known whatever the config says now.
    assert batch_summary(state("in_progress", total=1, cost_usd=0.25), FREE).cost_usd == 0.25
    assert pages.fmt_cost(None) == "unknown" and pages.fmt_cost(0.0) == "$0.0000"


def test_retry_is_offered_for_expired_requests_too() -> None:
    expired = batch_summary(state("completed", total=2, completed=1, failed=1, n_expired=1))
    page = pages.render(pages.BatchPage(viewer=WRITER, batch=detail_of(expired)))
    assert 'data-action="retry">' in page


def detail_of(row: BatchSummary) -> BatchDetail:
    return BatchDetail.of(row, causes=(), causes_partial=False, failures=(), timeline=())


def test_batch_page_shows_what_the_batch_was_created_with_its_files_and_health() -> None:
    info = BatchInfo(
        endpoint="/v1/chat/completions",
        input_file_id="file-in1",
        input_file_name="questions <1>.jsonl",
        completion_window="24h",
        expires_at=1767312000,
        output_file_id="file-batch_1-output",
        error_file_id="file-batch_1-errors",
    )
    batch = BatchDetail.of(
        summary("completed", metadata={"team": "search", "run": "7"}),
        causes=(),
        causes_partial=False,
        failures=(),
        timeline=(),
        info=info,
        health=(RouteHealth("primary", "closed"), RouteHealth("backup", "open")),
    )
    html = pages.render(pages.BatchPage(viewer=READER, batch=batch))
    assert "<code>/v1/chat/completions</code>" in html and "<dd>24h</dd>" in html
    assert "questions &lt;1&gt;.jsonl" in html and "<code>file-in1</code>" in html
    assert '<time datetime="2026-01-02T00:00:00Z">' in html
    assert "<li><code>run</code> = 7</li><li><code>team</code> = search</li>" in html
    # The files download (the session works on /v1), under useful names.
    assert (
        '<a href="/v1/files/file-batch_1-output/content" download="batch_1_output.jsonl"'
        ' data-file="output">' in html
    )
    assert 'href="/v1/files/file-batch_1-errors/content" download="batch_1_errors.jsonl"' in html
    assert 'href="/v1/files/file-in1/content" download="questions &lt;1&gt;.jsonl"' in html
    assert '<li>backup <span class="breaker b-open">open</span></li>' in html
    # A running batch has no output yet; a gone input file says so.
    running = BatchDetail.of(
        summary(), causes=(), causes_partial=False, failures=(), timeline=(), info=BatchInfo()
    )
    html = pages.render(pages.BatchPage(viewer=READER, batch=running))
    assert "data-file=" not in html and "when the batch ends" in html and "(gone)" in html


def test_failed_requests_table_pages_and_keeps_its_filter() -> None:
    failure = Failure("q7", "chat", "errored", "timeout", "slow", ())
    batch = BatchDetail.of(
        summary("completed", failed=45),
        causes=(),
        causes_partial=False,
        failures=(failure,) * 20,
        timeline=(),
        failure_filter=FailureFilter(custom_id="q&", endpoint="primary", page=2),
        failure_table=FailureTable(matching=45, has_next=True),
    )
    page = pages.BatchPage(viewer=READER, batch=batch)
    assert page.failures_range == "21\u201340 of 45"
    html = pages.render(page)
    assert 'href="/batches/batch_1?custom_id=q%26&amp;endpoint=primary#failures">' in html
    assert 'href="/batches/batch_1?custom_id=q%26&amp;endpoint=primary&amp;page=3#failures"' in html
    assert 'name="custom_id" value="q&amp;"' in html and 'name="endpoint" value="primary"' in html
    assert "No failed requests match." in html
    last = replace(batch, failure_table=FailureTable(matching=45, partial=True))
    assert pages.BatchPage(batch=last).failures_pager.older_href is None
    assert pages.BatchPage(batch=last).failures_range == "21\u201340 of 45+"


def test_batch_list_search_keeps_its_terms_across_pages() -> None:
    search = ListFilter(batch_id="ab", endpoint="/v1/embeddings")
    pager = pages.Pager.after("/", "batch_9", "batch_5", older="Older", keep=search.query())
    html = pages.render(
        pages.BatchesPage(viewer=WRITER, rows=[], after="batch_9", pager=pager, search=search)
    )
    assert 'href="/?batch_id=ab&amp;endpoint=%2Fv1%2Fembeddings&amp;after=batch_5"' in html
    assert 'href="/?batch_id=ab&amp;endpoint=%2Fv1%2Fembeddings">' in html
    assert '<option value="/v1/embeddings" selected>' in html and 'value="ab"' in html
    assert "No batches match this search." in html
    assert 'data-query="batch_id=ab&amp;endpoint=%2Fv1%2Fembeddings&amp;after=batch_9"' in html
    assert search.matches("batch_abc", "/v1/embeddings")
    assert not search.matches("batch_abc", "/v1/chat/completions")
    assert not search.matches("batch_x", "/v1/embeddings") and not ListFilter()
