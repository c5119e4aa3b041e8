"""The context a local server reports reaches GMN rounds (#23): llama.cpp's /props n_ctx and
vLLM's /v1/models max_model_len, read over real HTTP from small stand-in servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from producers.context_probe import route_context, served_context
from schemas.config import parse_config
from schemas.request import RouteHop

pytestmark = pytest.mark.integration

LLAMA = {"/props": {"default_generation_settings": {"n_ctx": 2048}, "total_slots": 4}}
VLLM = {"/v1/models": {"object": "list", "data": [{"id": "m", "max_model_len": 4096}]}}


def serve(routes: dict[str, Any]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(orjson.dumps(body or {"error": "not found"}))

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    started = {name: serve(routes) for name, routes in
               {"llama": LLAMA, "vllm": VLLM, "plain": {}}.items()}  # fmt: skip
    yield {name: f"http://127.0.0.1:{s.server_address[1]}/v1" for name, s in started.items()}
    for s in started.values():
        s.shutdown()
        s.server_close()


def test_servers_report_their_context_and_the_route_takes_the_smallest(
    servers: dict[str, str],
) -> None:
    assert served_context(servers["llama"]) == 2048  # per slot, from /props
    assert served_context(servers["vllm"]) == 4096  # from /v1/models
    assert served_context(servers["plain"]) is None  # says nothing: nothing assumed
    assert served_context("http://127.0.0.1:9/v1", timeout_s=0.5) is None  # unreachable
    endpoints = {name: {"provider": "openai", "base_url": url, "model": "m"}
                 for name, url in servers.items()}  # fmt: skip
    config = parse_config({"endpoints": {**endpoints, "mock": {"provider": "mock"}}})
    hops = [RouteHop(endpoint=n) for n in ("vllm", "llama", "plain", "mock")]
    assert route_context(config, hops) == 2048
    assert route_context(config, [RouteHop(endpoint="mock")]) is None
