"""What the fake server's vendor formats share: the parsed call, the reply, the renderer ABC."""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from multidict import CIMultiDictProxy

from providers.fake_server.faults import Fault, WindowState
from schemas.tokens import estimate_tokens


class BadRequest(Exception):
    """The request is not the vendor's wire format: answered with the vendor's 400."""


@dataclass
class Call:
    """What the server understood of one request: a chat, or a list of inputs."""

    model: str
    messages: list[tuple[str, str]]
    max_tokens: int | None = None
    stream: bool = False
    key: str | None = None
    #: The endpoint kind of the path it came in on ("chat", "embeddings", ...).
    kind: str = "chat"
    #: The request body as received.
    body: dict[str, Any] = field(default_factory=dict)
    #: Texts of an embeddings / moderations / completions request.
    inputs: list[str] = field(default_factory=list)

    @property
    def last_user(self) -> str:
        """The text of the last user message or input (what the server echoes)."""
        if self.inputs:
            return self.inputs[-1]
        return next((text for role, text in reversed(self.messages) if role == "user"), "")

    @property
    def input_tokens(self) -> int:
        """The prompt's size by the project's 4-characters-a-token rule."""
        texts = [text for _, text in self.messages] + self.inputs
        return sum(estimate_tokens(text) for text in texts)

    def usage(self, fault: Fault, text: str) -> tuple[int, int]:
        """(input, output) tokens the answer `text` reports: the fault's scripted counts where
        it sets them, else the prompt's and the text's estimates."""
        prompt = fault.input_tokens if fault.input_tokens is not None else self.input_tokens
        output = fault.output_tokens if fault.output_tokens is not None else estimate_tokens(text)
        return prompt, output

    @property
    def budget_tokens(self) -> int:
        """What a TPM limit charges up front: prompt plus requested output (as OpenAI does)."""
        return self.input_tokens + (self.max_tokens or 0)


@dataclass
class Reply:
    """A complete HTTP answer, before the server possibly truncates it."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def json_reply(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply."""
    return Reply(status, orjson.dumps(data), dict(headers or {}))


def html_reply(status: int) -> Reply:
    """What a proxy in front of the API answers (nginx / Cloudflare style HTML)."""
    title = f"{status} {HTTPStatus(status).phrase}"
    body = (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>cloudflare</center></body></html>"
    )
    return Reply(status, body.encode(), content_type="text/html")


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts / blocks of a content list."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    raise BadRequest("message content must be a string or a list of content parts")


def messages_of(raw: Any, name: str = "messages") -> list[tuple[str, str]]:
    """Validate a vendor `messages` list into (role, text) pairs."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest(f"{name}: must be a non-empty list")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"{name}.{i}: must be an object with a role")
        out.append((msg["role"], text_of(msg.get("content", ""))))
    return out


def retry_headers(fault: Fault) -> dict[str, str]:
    """retry-after (seconds or HTTP-date) and retry-after-ms, as the fault asks."""
    headers: dict[str, str] = {}
    if fault.retry_after_s is not None:
        if fault.retry_after_date:
            headers["retry-after"] = formatdate(time.time() + fault.retry_after_s, usegmt=True)
        else:
            headers["retry-after"] = f"{fault.retry_after_s:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    return headers


def fault_window(fault: Fault) -> WindowState | None:
    """The limit state a rate-limit fault advertises (exhausted where it sets a reset)."""
    if fault.reset_requests_s is None and fault.reset_tokens_s is None:
        return None
    requests_left = fault.remaining_requests
    tokens_left = fault.remaining_tokens
    if requests_left is None and fault.reset_requests_s is not None:
        requests_left = 0
    if tokens_left is None and fault.reset_tokens_s is not None:
        tokens_left = 0
    return WindowState(
        limit_requests=None,
        limit_tokens=None,
        remaining_requests=requests_left,
        remaining_tokens=tokens_left,
        reset_requests_s=fault.reset_requests_s,
        reset_tokens_s=fault.reset_tokens_s,
    )


def request_id(prefix: str = "req_") -> str:
    """A vendor-looking request id."""
    return prefix + uuid.uuid4().hex[:24]


class Wire(ABC):
    """One vendor's wire format: parse its request, render its success and error answers."""

    name: ClassVar[str]
    #: POST path -> the endpoint kind it serves.
    paths: ClassVar[dict[str, str]]
    models_path: ClassVar[str]
    #: The vendor's 400 messages for a body that is not an object, and for a missing model.
    not_an_object: ClassVar[str]
    no_model: ClassVar[str]
    #: Error kinds a proxy in front of the API answers with its HTML page, and the status.
    proxy_pages: ClassVar[dict[str, int]] = {
        "bad_gateway": 502,
        "unavailable": 503,
        "gateway_timeout": 504,
    }

    def __init__(self, embedding_dimensions: int = 16) -> None:
        self.embedding_dimensions = embedding_dimensions

    def model_of(self, body: Any) -> str:
        """The model a request body names; BadRequest (the vendor's words) for a body that is
        not an object or names none."""
        if not isinstance(body, dict):
            raise BadRequest(self.not_an_object)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest(self.no_model)
        return model

    @abstractmethod
    def parse(self, body: Any, headers: CIMultiDictProxy[str], kind: str) -> Call:
        """The call in a request body for the path's kind, or BadRequest."""

    @abstractmethod
    def key(self, headers: CIMultiDictProxy[str]) -> str | None:
        """The API key the request presented."""

    @abstractmethod
    def success(self, call: Call, fault: Fault, text: str, window: WindowState | None) -> Reply:
        """A completion (or, for `content_filter`, the vendor's filtered completion)."""

    def error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
        """The vendor's answer for an error kind, with the fault's overrides applied; for a
        `proxy_pages` kind the proxy's HTML page, unless the fault words the error itself."""
        if kind in self.proxy_pages and not self.worded(fault):
            return html_reply(fault.status or self.proxy_pages[kind])
        return self.vendor_error(kind, call, fault)

    def worded(self, fault: Fault) -> bool:
        """Whether the fault says the error's message or type: the vendor's own answer then."""
        return fault.message is not None or fault.error_type is not None

    @abstractmethod
    def vendor_error(self, kind: str, call: Call | None, fault: Fault) -> Reply:
        """The vendor's own (JSON) answer for an error kind, with the fault's overrides."""

    @abstractmethod
    def limit_headers(self, window: WindowState) -> dict[str, str]:
        """The vendor's rate-limit headers for a window state."""

    @abstractmethod
    def models(self, names: list[str]) -> Reply:
        """The vendor's model listing (the adapters' health check)."""

    def bad_request(self, message: str) -> Reply:
        """The vendor's 400 for a body that is not its wire format."""
        return self.error("bad_request", None, Fault(kind="bad_request", message=message))

    def limit_message(self, call: Call, window: WindowState, wait_s: float) -> str:
        """The error text of an enforced RPM/TPM limit."""
        return (
            f"rate limit exceeded for {call.model}: limits {window.limit_requests} requests, "
            f"{window.limit_tokens} tokens per window; retry in {wait_s:.3f}s"
        )

    def malformed(self) -> Reply:
        """Valid JSON that is not a completion."""
        return json_reply(200, {"object": "unexpected", "data": None})

    def rate_limited(self, call: Call | None, fault: Fault, window: WindowState | None) -> Reply:
        """A 429 with retry headers and, when known, the limit headers."""
        reply = self.error("rate_limited", call, fault)
        reply.headers.update(retry_headers(fault))
        state = window or fault_window(fault)
        if state is not None:
            reply.headers.update(self.limit_headers(state))
        return reply
