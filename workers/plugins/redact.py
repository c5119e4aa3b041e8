"""Redaction hook: masks patterns (e-mail addresses by default) in prompts before they leave,
and in answers before they are stored."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

from pydantic import Field

from providers.base import ProviderResponse
from schemas.config import Regex
from workers.plugins import CallContext, Plugin, PluginConfig

EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
#: Keys whose string values are prose a person wrote or a model answered.
TEXT_KEYS = frozenset(
    {
        "content",
        "text",
        "input",
        "prompt",
        "instructions",
        "system",
        "arguments",
        "refusal",
        "thinking",
        "output",
    }
)


class RedactConfig(PluginConfig):
    """Regular expressions to mask, and the mask."""

    patterns: list[Regex] = Field(default_factory=lambda: [EMAIL], min_length=1)
    replacement: str = "[REDACTED]"
    outputs: bool = True


class Redactor(Plugin):
    """Replaces every match of the configured patterns."""

    name = "redact"
    Config = RedactConfig
    config: RedactConfig

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{p})" for p in self.config.patterns))

    def redact(self, text: str) -> str:
        """The text with every match masked."""
        return self._regex.sub(self.config.replacement, text)

    def redact_texts(self, value: Any, key: str = "") -> Any:
        """`value` with every string under a text-bearing key masked (content, text, input,
        prompt, instructions, system, arguments...); ids, roles and types left alone."""
        if isinstance(value, str):
            return self.redact(value) if key in TEXT_KEYS else value
        if isinstance(value, list):
            return [self.redact_texts(v, key) for v in value]
        if isinstance(value, dict):
            return {k: self.redact_texts(v, k) for k, v in value.items()}
        return value

    async def before_call(self, ctx: CallContext) -> ProviderResponse | None:
        """Mask prompts (every text of the body); never answers by itself."""
        body = self.redact_texts(ctx.request.body)
        ctx.request = ctx.request.model_copy(update={"body": body})
        return None

    async def after_call(self, ctx: CallContext, response: ProviderResponse) -> ProviderResponse:
        """Mask the answer too, its body included, unless `outputs` is off."""
        if not self.config.outputs:
            return response
        update: dict[str, Any] = {"text": self.redact(response.text)}
        if response.body is not None:
            update["body"] = self.redact_texts(response.body)
        if response.tool_calls:
            update["tool_calls"] = self.redact_texts(response.tool_calls)
        return response.model_copy(update=update)
