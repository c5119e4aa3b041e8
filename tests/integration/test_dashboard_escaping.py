"""Hostile values (batch metadata, custom_ids, error messages and codes, hop names, a
validation message, a URL) on every dashboard page and fragment that shows them: each comes
out as the same text in the browser's parse, and never as an element, attribute or script
(in-process gateway, real redis-server, no workers)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.integration.test_dashboard import login, own_origin, write_failures
from tests.integration.test_gateway_api import new_batch, settled
from tests.integration.test_gateway_support import (
    KEY_A,
    api,
    chat_line,
    gateway_config,
    jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
__all__ = ["api", "gateway_config"]  # fixtures used by name

#: Closes a text node or an attribute (either quote), then opens a script and an element
#: with an event handler.
EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


class Parsed(HTMLParser):
    """A document as an HTML parser sees it: elements with their attributes, text nodes,
    and the contents of <script> elements."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.scripts: list[str] = []
        self._script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._script else self.texts).append(data)

    def attribute(self, tag: str, wanted: str, /, **match: str) -> str | None:
        """Attribute `wanted` of the first `tag` whose attributes include `match`."""
        for element, attrs in self.elements:
            if element == tag and all(attrs.get(k) == v for k, v in match.items()):
                return attrs.get(wanted)
        raise AssertionError(f"no <{tag}> with {match}")


def inert(html: str, *shown: str) -> Parsed:
    """Assert that `html` has no element, handler or script the gateway did not write, and
    that each of `shown` is the text of one of its text nodes (escaped, not dropped)."""
    doc = Parsed(html)
    for tag, attrs in doc.elements:
        assert tag != "img", attrs
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if tag == "script":
            source = attrs.get("src") or ""
            assert attrs.get("type") == "application/json" or source.startswith(
                "/static/dashboard.js?"
            ), attrs
    for script in doc.scripts:  # data only, and nothing in it a parser reads as markup
        assert "<" not in script
        orjson.loads(script)
    for text in shown:
        assert any(text in node for node in doc.texts), f"{text!r} not shown"
    return doc


async def first_event(browser: Any, path: str) -> Any:
    """The data of the first event of a dashboard stream."""
    resp = await browser.get(path)
    try:
        async for raw in resp.content:
            line = raw.decode()
            if line.startswith("data: "):
                return orjson.loads(line[6:])
    finally:
        resp.close()
    raise AssertionError(f"{path} ended without an event")


async def test_hostile_values_render_as_text_on_every_page(api: Any, redis_url: str) -> None:
    client = await api()
    # Given a batch with hostile metadata whose requests have hostile custom_ids and fail
    # with hostile codes, messages and hop names,
    bad1, bad2 = EVIL + "1", EVIL + "2"
    lines = [chat_line(bad1), chat_line(bad2), chat_line("fine")]
    created = await new_batch(client, KEY_A, jsonl(lines), metadata={"note": EVIL})
    batch_id = (await settled(client, KEY_A, created["id"]))["id"]
    rows = [(bad1, EVIL, False), (bad2, "rate_limited", False), ("fine", "", True)]
    write_failures(redis_url, batch_id, rows, message=EVIL, first_hop=EVIL)
    # and one that failed validation on a hostile duplicate custom_id,
    invalid = await new_batch(client, KEY_A, jsonl([chat_line(EVIL), chat_line(EVIL)]))
    invalid_id = (await settled(client, KEY_A, invalid["id"]))["id"]
    browser = await login(client, KEY_A)

    # the list shows the metadata as text, when rendered and when streamed,
    inert(await (await browser.get("/")).text(), f"note={EVIL}")
    streamed = await first_event(browser, "/ui/events/batches?interval=0.05")
    inert(streamed["html"], f"note={EVIL}")
    # the batch page shows the custom_ids, codes, messages and hops as text, and its data
    # for the script survives as data,
    page = inert(await (await browser.get(f"/batches/{batch_id}")).text(), bad1, bad2, EVIL)
    [data] = page.scripts
    detail = orjson.loads(data)
    assert detail["metadata"] == {"note": EVIL}
    assert [f["key"] for f in detail["failures"]] == [bad1, bad2]
    assert detail["failures"][0]["message"] == EVIL
    # as do the rows the script swaps in,
    fragments = (await (await browser.get(f"/ui/api/batches/{batch_id}")).json())["html"]
    inert(fragments["causes"], EVIL)
    inert(fragments["failures"], bad1, bad2, EVIL)
    # hostile search and filter terms stay inside their inputs' values (and the links
    # that keep them),
    query = quote(EVIL, safe="")
    filtered = await (await browser.get(f"/batches/{batch_id}?custom_id={query}")).text()
    assert inert(filtered).attribute("input", "value", name="custom_id") == EVIL
    searched = inert(await (await browser.get(f"/?batch_id={query}&endpoint={query}")).text())
    assert searched.attribute("input", "value", name="batch_id") == EVIL
    chosen = [a for tag, a in searched.elements if tag == "option" and "selected" in a]
    assert [a["value"] for a in chosen] == [EVIL]
    # the validation errors name the hostile custom_id as text,
    shown = await (await browser.get(f"/batches/{invalid_id}")).text()
    inert(shown, "<script>alert(1)</script>", "<img src=x onerror=alert(2)>")
    # an error page repeats a hostile id as text,
    missing = await browser.get("/batches/" + quote(EVIL, safe=""))
    assert missing.status == 404
    inert(await missing.text(), f"No batch found with id '{EVIL}'.")
    # and the login form keeps a hostile `next` inside its attribute, before and after a
    # wrong key.
    target = "/batches/" + EVIL
    client.session.cookie_jar.clear()
    form = inert(await (await client.get("/login", params={"next": target})).text())
    assert form.attribute("input", "value", name="next") == target
    wrong = await client.post(
        "/login",
        data={"api_key": "sk-wrong", "next": target},
        headers={"Origin": own_origin(client)},
    )
    assert wrong.status == 401
    form = inert(await wrong.text(), "Unknown API key.")
    assert form.attribute("input", "value", name="next") == target
