"""A fault-injecting fake of the OpenAI, Anthropic and Ollama APIs, shipped for tests and users.

async with FakeServer(rpm=600) as server:
    server.faults.push("rate_limited:2", "server_error", "ok")
    ...  # point an adapter's base_url at server.openai_url / server.url
    assert len(server.calls(path="/v1/chat/completions")) == 3
"""

from providers.fake_server.faults import Fault, FaultKind, FaultPlan, SlidingWindow
from providers.fake_server.limits import Outage, ServerLimits, TokenBuckets, max_in_window
from providers.fake_server.server import FakeServer, RequestRecord

__all__ = [
    "FakeServer",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Outage",
    "RequestRecord",
    "ServerLimits",
    "SlidingWindow",
    "TokenBuckets",
    "max_in_window",
]
