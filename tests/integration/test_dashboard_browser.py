"""The dashboard in headless Chromium (Debian's, driven by Playwright): a real gateway and
real workers run a batch; the page shows it moving with the API's counts, its cancel button
cancels it, a read-only key cannot, nothing loads from elsewhere, and it fits 1280x800 and a
phone. Screenshots go to `artifacts/`.

Without chromium (or the playwright package) the test skips, unless
BATCHYARD_REQUIRE_BROWSER=1 (as in CI), where it fails instead.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ROOT, WorkerPool, cli_env
from tests.integration.test_dashboard import write_failures
from tests.integration.test_gateway_support import (
    KEY_A,
    KEY_A_READ,
    GatewayProcess,
    auth,
    chat_line,
    gateway_proc,
    jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
__all__ = ["gateway_proc"]  # fixture used by name

CHROMIUM = os.environ.get("BATCHYARD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}
#: `--stop` of dashboard.css (light scheme, as headless chromium renders by default).
CANCELLED_RGB = (110, 64, 201)


def _unavailable(reason: str) -> None:
    if os.environ.get("BATCHYARD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BATCHYARD_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's headless chromium under Playwright (never Playwright's own downloads)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def api(gateway: GatewayProcess, method: str, path: str, body: bytes | None = None) -> Any:
    headers = auth(KEY_A)
    if body is not None and not path.endswith("/files"):
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(gateway.url + path, body, headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return orjson.loads(resp.read())


def create_batch(gateway: GatewayProcess, lines: int) -> str:
    boundary = "dashboardtest"
    data = jsonl([chat_line(f"q{i}", f"question {i}") for i in range(lines)])
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        gateway.url + "/v1/files",
        form,
        {**auth(KEY_A), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        file_id = orjson.loads(resp.read())["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch_id: str = api(gateway, "POST", "/v1/batches", orjson.dumps(body))["id"]
    return batch_id


class Watch:
    """Every request a browser context makes, and every console error (CSP violations
    are reported there)."""

    def __init__(self, context: Any) -> None:
        self.urls: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda r: self.urls.append(r.url))
        context.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def outside(self, origin: str) -> list[str]:
        return [u for u in self.urls if not u.startswith(origin + "/")]


def log_in(page: Any, gateway: GatewayProcess, key: str, path: str = "/") -> None:
    page.goto(gateway.url + path)
    assert "/login" in page.url
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(gateway.url + path)


def ui_counts(page: Any) -> dict[str, int]:
    return {
        name: int(page.inner_text(f'.stats [data-field="{name}"]').replace(",", ""))
        for name in ("total", "completed", "failed", "cancelled")
    }


def fits(page: Any) -> bool:
    """No horizontal scrolling: the page is usable at this width."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def fill_colour(context: Any, bar: Any) -> tuple[int, int, int]:
    """The colour a progress bar is drawn in at its start (its filled part), read from a
    screenshot by a canvas in a blank page (the dashboard's CSP allows no data: images)."""
    png = base64.b64encode(bar.screenshot()).decode()
    blank = context.new_page()
    try:
        rgb = blank.evaluate(
            """async (png) => {
                const img = new Image();
                img.src = 'data:image/png;base64,' + png;
                await img.decode();
                const canvas = document.createElement('canvas');
                canvas.width = img.width;
                canvas.height = img.height;
                const ctx = canvas.getContext('2d');
                ctx.drawImage(img, 0, 0);
                return Array.from(ctx.getImageData(4, img.height >> 1, 1, 1).data.slice(0, 3));
            }""",
            png,
        )
    finally:
        blank.close()
    return (rgb[0], rgb[1], rgb[2])


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_dashboard_shows_a_running_batch_and_cancels_it(
    chromium: Any,
    redis_url: str,
    worker_pool: Callable[..., WorkerPool],
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: Callable[..., GatewayProcess],
) -> None:
    config = write_config({"endpoints": {"mock": {"provider": "mock", "latency_ms": 100}}})
    worker_pool(cli_env(redis_url, BATCHYARD_CONFIG=str(config)), "--concurrency", "4")
    gateway = gateway_proc(redis_url, "--config", str(config))
    # Given a batch of 400 requests that takes ~10 s (4 at a time, 100 ms each),
    batch_id = create_batch(gateway, 400)
    context = chromium.new_context(viewport=WIDE)
    watch = Watch(context)
    page = context.new_page()
    # when its owner logs in, the list shows it, with a link to its page,
    log_in(page, gateway, KEY_A)
    page.wait_for_selector(f'tr[data-batch-id="{batch_id}"]')
    page.wait_for_selector("[data-live][data-state=live]")
    assert fits(page)
    shot(page, "list-1280")
    page.click(f'tr[data-batch-id="{batch_id}"] a')
    page.wait_for_url(f"{gateway.url}/batches/{batch_id}")
    # where progress moves live (no reload) and the counts are the API's.
    start = page.evaluate("document.querySelector('progress[data-field=progress]').value")
    page.wait_for_function(
        "(start) => document.querySelector('progress[data-field=progress]').value > start + 2",
        arg=start,
        timeout=20_000,
    )
    before = api(gateway, "GET", f"/v1/batches/{batch_id}")["request_counts"]
    shown = ui_counts(page)
    after = api(gateway, "GET", f"/v1/batches/{batch_id}")["request_counts"]
    assert shown["total"] == before["total"] == after["total"] == 400
    assert before["completed"] - 60 <= shown["completed"] <= after["completed"]
    page.wait_for_selector("[data-chart] svg path.line")
    # The chart's time axis is labelled along its length, not only at its ends.
    page.wait_for_function(
        "() => document.querySelectorAll('[data-chart] svg text.tick').length >= 3",
        timeout=10_000,
    )
    assert fits(page)
    shot(page, "batch-1280")
    # The cancel button asks first, then cancels the batch,
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click('form[data-action="cancel"] button')
    page.wait_for_url(f"{gateway.url}/batches/{batch_id}")
    assert dialogs and "Cancel this batch" in dialogs[0]
    deadline = time.monotonic() + 20
    while (final := api(gateway, "GET", f"/v1/batches/{batch_id}"))["status"] != "cancelled":
        assert time.monotonic() < deadline, f"batch still {final['status']}"
        time.sleep(0.1)
    counts = final["request_counts"]
    # Requests a cancel kept from being sent are not `failed` (as OpenAI counts them).
    assert counts["completed"] < 400 and counts["failed"] == 0
    # and the page ends showing the final counts, the unsent requests as cancelled (not
    # failed), a bar in the cancelled colour short of 100%, and no button.
    page.wait_for_function(
        "() => document.querySelector('.title .status').textContent === 'cancelled'",
        timeout=10_000,
    )
    page.wait_for_function(
        """() => ['completed', 'failed', 'cancelled']
            .map((f) => document.querySelector(`.stats [data-field=${f}]`).textContent)
            .reduce((sum, text) => sum + Number(text.replace(/,/g, '')), 0) === 400""",
        timeout=10_000,
    )
    shown = ui_counts(page)
    assert shown["total"] == 400 and shown["completed"] == counts["completed"]
    assert shown["cancelled"] > 0 and shown["failed"] == 0
    assert shown["completed"] + shown["failed"] + shown["cancelled"] == 400
    bar = page.locator('.panel progress[data-field="progress"]')
    assert bar.get_attribute("class") == "bar s-cancelled"
    # (its fill, as drawn, is the cancelled colour, as its badge's text, not the running blue)
    badge = page.locator(".title .status").evaluate("el => getComputedStyle(el).color")
    assert badge == f"rgb{CANCELLED_RGB}" and fill_colour(context, bar) == CANCELLED_RGB
    assert float(bar.evaluate("el => el.value")) < 100
    assert page.inner_text('.panel [data-field="percent"]') != "100%"
    assert page.locator('form[data-action="cancel"]').is_hidden()
    # The output file's link appeared when the batch ended, without a reload.
    page.wait_for_selector('[data-files] a[data-file="output"]', timeout=10_000)
    shot(page, "batch-cancelled-1280")
    page.goto(gateway.url + "/providers")
    page.wait_for_selector("[data-live][data-state=live]")
    assert page.inner_text('[data-usage] [data-field="service"]') == "operational"
    assert page.locator("tr[data-endpoint]").count() == 0  # endpoints: operators only
    assert fits(page)
    shot(page, "providers-1280")

    # A read-only key of the same tenant sees the batch but has no button, and the API
    # refuses a cancel sent from its page with the right CSRF token.
    reader = chromium.new_context(viewport=NARROW, is_mobile=True, has_touch=True)
    narrow = Watch(reader)
    phone = reader.new_page()
    log_in(phone, gateway, KEY_A_READ, f"/batches/{batch_id}")
    assert phone.locator('form[data-action="cancel"]').count() == 0
    assert narrow.errors == []
    status = phone.evaluate(
        """async (id) => {
            const token = document.querySelector('meta[name=csrf-token]').content;
            const resp = await fetch(`/v1/batches/${id}/cancel`,
                                     {method: 'POST', headers: {'X-CSRF-Token': token}});
            return resp.status;
        }""",
        batch_id,
    )
    assert status == 403
    narrow.errors.clear()  # the browser reports that refusal on the console
    # On a phone-sized screen every page fits without sideways scrolling.
    assert fits(phone)
    shot(phone, "batch-390")
    for path, name in (("/", "list-390"), ("/providers", "providers-390")):
        phone.goto(gateway.url + path)
        phone.wait_for_selector("[data-live][data-state=live]")
        assert fits(phone), path
        shot(phone, name)
    # Nothing was requested from anywhere but the gateway, and nothing was blocked by the CSP.
    for seen in (watch, narrow):
        assert seen.outside(gateway.url) == []
        assert seen.errors == []
    assert KEY_A not in gateway.stderr() and KEY_A_READ not in gateway.stderr()
    reader.close()
    context.close()


def test_batch_page_tells_cost_unknown_downloads_its_files_and_pages_its_failures(
    chromium: Any,
    redis_url: str,
    write_config: Callable[[dict[str, object]], Path],
    gateway_proc: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    # Given a gateway whose only endpoint has no price, and a batch of 50 requests whose
    # results are written as workers write them: 5 answers and 45 failures,
    config = write_config({"endpoints": {"mock": {"provider": "mock"}}})
    gateway = gateway_proc(redis_url, "--config", str(config))
    batch_id = create_batch(gateway, 50)
    deadline = time.monotonic() + 20
    while (batch := api(gateway, "GET", f"/v1/batches/{batch_id}"))["request_counts"]["total"] < 50:
        assert time.monotonic() < deadline, f"batch still {batch['status']}"
        time.sleep(0.05)
    rows = [(f"q{i}", "", True) for i in range(5)]
    rows += [(f"q{i}", "timeout", False) for i in range(5, 50)]
    write_failures(redis_url, batch_id, rows)
    context = chromium.new_context(viewport=WIDE, accept_downloads=True)
    watch = Watch(context)
    page = context.new_page()
    log_in(page, gateway, KEY_A)
    # the list and the batch page say its cost is unknown (not $0.0000),
    row = page.locator(f'tr[data-batch-id="{batch_id}"]')
    assert row.locator('[data-field="cost"]').inner_text() == "unknown"
    assert row.locator("progress").get_attribute("class") == "bar s-completed"
    page.click(f'tr[data-batch-id="{batch_id}"] a')
    page.wait_for_url(f"{gateway.url}/batches/{batch_id}")
    assert page.inner_text('.stats [data-field="cost"]') == "unknown"
    # its links download the output and error files,
    for kind, lines in (("output", 5), ("errors", 45)):
        with page.expect_download() as info:
            page.click(f'[data-files] a[data-file="{kind}"]')
        download = info.value
        assert download.suggested_filename == f"{batch_id}_{kind}.jsonl"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        assert len(saved.read_bytes().splitlines()) == lines
    # and the failed table pages, 20 at a time, and filters.
    failures = '[data-failures] td[data-label="Request"]'
    assert page.locator(failures).all_inner_texts() == [f"q{i}" for i in range(10, 30)]
    shot(page, "batch-failures-1280")
    page.click("#failures .pager a:has-text('Next')")
    page.wait_for_url("**page=2#failures")
    assert page.locator(failures).all_inner_texts()[0] == "q30"
    page.click("#failures .pager a:has-text('Next')")
    page.wait_for_url("**page=3#failures")
    assert page.locator(failures).all_inner_texts() == [f"q{i}" for i in range(5, 10)]
    assert page.locator("#failures .pager a:has-text('Next')").count() == 0
    assert page.inner_text('[data-field="failures-range"]') == "41\u201345 of 45"
    page.fill('#failures input[name="custom_id"]', "q4")
    page.click("#failures form.filter button")
    page.wait_for_url("**custom_id=q4**")
    assert page.locator(failures).all_inner_texts() == [f"q4{i}" for i in range(10)]
    assert fits(page)
    assert watch.outside(gateway.url) == [] and watch.errors == []
    context.close()
