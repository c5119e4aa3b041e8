"""The request producers enqueue and workers execute: an endpoint kind and its body as written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

#: The OpenAI-compatible endpoints a batch line can address, plus Anthropic's Messages API.
EndpointKind = Literal["chat", "embeddings", "responses", "completions", "moderations", "messages"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
Tier = Literal["basic", "advanced"]

#: The `url` of an OpenAI batch line for each kind it can carry.
KIND_URLS: dict[EndpointKind, str] = {
    "chat": "/v1/chat/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "completions": "/v1/completions",
    "moderations": "/v1/moderations",
}
URL_KINDS: dict[str, EndpointKind] = {url: kind for kind, url in KIND_URLS.items()}

#: Body keys that are batchyard's own, never sent upstream.
EXTENSIONS = frozenset({"tier", "route", "batchyard"})

#: custom_id is used in Redis keys and file names downstream: keep it printable and bounded.
CUSTOM_ID_MAX = 512


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must contain printable characters only")
    return value


#: A request's own id: printable, 1 to CUSTOM_ID_MAX characters.
CustomId = Annotated[str, Field(min_length=1, max_length=CUSTOM_ID_MAX), AfterValidator(_printable)]


class Message(BaseModel):
    """One chat message, for building requests in code (`LLMRequest.chat`); any field OpenAI
    documents for a message (`tool_calls`, `tool_call_id`, `name`...) may be given."""

    model_config = ConfigDict(extra="allow", frozen=True)

    role: Role
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        """The message's text: its string content, or its text parts joined."""
        content = self.content
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") for p in content or () if isinstance(p.get("text"), str))


class StructuredOptions(BaseModel):
    """The body's `batchyard` extension: batchyard's own per-request options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Entry-point name in `batchyard.validators`; default `json_schema` when the body has a
    #: json_schema `response_format`.
    validator: str | None = Field(default=None, min_length=1, max_length=100)
    #: Rounds in all, the first included; default: the first endpoint's `structured.max_rounds`.
    max_rounds: int | None = Field(default=None, ge=1, le=20)
    #: Options handed to the validator as they are.
    options: dict[str, Any] = Field(default_factory=dict)
    #: Best-of-k: answers asked for in the first round (`n` where the endpoint takes it); the
    #: first valid one is kept, the others count in usage and cost.
    candidates: int | None = Field(default=None, ge=1, le=16)


class RouteHop(BaseModel):
    """One endpoint of a route, optionally pinning the model or tier used there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str | None = None
    tier: Tier | None = None


class LLMRequest(BaseModel):
    """One request: its endpoint kind and the vendor body exactly as the user wrote it.

    The body is checked once, at submit (`schemas.bodies`); workers read it as is. `tier` and
    `route` are batchyard's own and never part of the body sent upstream.
    """

    model_config = ConfigDict(extra="forbid")

    custom_id: CustomId
    kind: EndpointKind = "chat"
    body: dict[str, Any]
    tier: Tier | None = None
    route: list[RouteHop] | None = Field(default=None, min_length=1)
    #: Structured-output options (`schemas.structured`): validator, rounds.
    batchyard: StructuredOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """A request of earlier versions (chat fields at the top, vendor keys in `params`)
        is a chat body: messages queued or dead-lettered before an upgrade run after it."""
        if not isinstance(data, dict) or "body" in data or "messages" not in data:
            return data
        fields = {k: v for k, v in data.items() if k in _KEPT}
        body = {k: data[k] for k in _FLAT_BODY if data.get(k) is not None}
        body["messages"] = [_turn(m) for m in data["messages"] or ()]
        params = data.get("params")
        if isinstance(params, dict):
            body.update(params)
        return {**fields, "kind": "chat", "body": body}

    @property
    def is_plain(self) -> bool:
        """Whether the request has none of batchyard's own fields (tier, route, options)."""
        return self.tier is None and self.route is None and self.batchyard is None

    @classmethod
    def chat(
        cls,
        custom_id: str,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        tier: Tier | None = None,
        route: list[RouteHop] | None = None,
        **body: Any,
    ) -> LLMRequest:
        """A chat request built in code; body fields given as None are left out."""
        turns = [_turn(m) for m in messages]
        fields = {k: v for k, v in body.items() if v is not None}
        return cls(
            custom_id=custom_id,
            kind="chat",
            body={"messages": turns, **fields},
            tier=tier,
            route=route,
        )

    @property
    def model(self) -> str | None:
        """The model the body names, used when the route pins none."""
        model = self.body.get("model")
        return model if isinstance(model, str) and model else None

    @property
    def messages(self) -> list[Message]:
        """The conversation of a chat or Messages body (empty for other kinds), read-only."""
        messages = self.body.get("messages")
        if not isinstance(messages, list):
            return []
        # The body was checked at submit: no second validation per read.
        return [Message.model_construct(**m) for m in messages if isinstance(m, dict)]

    @property
    def response_format(self) -> dict[str, Any] | None:
        """A chat body's `response_format`, when it asks for more than plain text."""
        fmt = self.body.get("response_format") if self.kind == "chat" else None
        if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
            return fmt
        return None

    def with_body(self, **fields: Any) -> LLMRequest:
        """A copy whose body has `fields` set (a field given as None is removed)."""
        body = {**self.body, **{k: v for k, v in fields.items() if v is not None}}
        for name in [k for k, v in fields.items() if v is None]:
            body.pop(name, None)
        return self.model_copy(update={"body": body})

    def with_messages(self, messages: Iterable[Message | Mapping[str, Any]]) -> LLMRequest:
        """A copy whose conversation is `messages` (a follow-up round of the same request)."""
        turns = [_turn(m) for m in messages]
        return self.model_copy(update={"body": {**self.body, "messages": turns}})


#: What a flat request of earlier versions kept beside its chat fields, and those fields
#: (its `metadata` was never sent upstream, so it is not put in the body).
_KEPT = ("custom_id", "tier", "route", "batchyard")
_FLAT_BODY = ("model", "max_tokens", "temperature", "top_p", "stop", "response_format")


def _turn(message: Message | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(message, Message):
        return message.model_dump(exclude_none=True)
    return dict(message)
