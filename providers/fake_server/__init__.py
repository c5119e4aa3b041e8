"""A fault-injecting fake of the OpenAI, Anthropic and Ollama APIs, shipped for tests and users.

async with FakeServer(rpm=600) as server:
    server.faults.push("rate_limited:2", "server_error", "ok")
    ...  # point an adapter's base_url at server.openai_url / server.url
    assert len(server.calls(path="/v1/chat/completions")) == 3

A `responder` scripts a model: it sees each request's messages and max_tokens and returns the
reply (text, or a Fault with text and finish_reason); `record_bodies=True` keeps every
request body in the log so a test can assert what went over the wire.
"""

from providers.fake_server.faults import Fault, FaultKind, FaultPlan, SlidingWindow
from providers.fake_server.limits import Outage, ServerLimits, TokenBuckets, max_in_window
from providers.fake_server.server import FakeServer, RequestRecord, Responder
from providers.fake_server.wire import Call

__all__ = [
    "Call",
    "FakeServer",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Outage",
    "RequestRecord",
    "Responder",
    "ServerLimits",
    "SlidingWindow",
    "TokenBuckets",
    "max_in_window",
]
