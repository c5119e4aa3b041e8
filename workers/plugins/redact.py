"""Redaction hook: masks patterns (e-mail addresses by default) in prompts before they leave,
and in answers before they are stored."""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import Field, field_validator

from providers.base import ProviderResponse
from workers.plugins import CallContext, Plugin, PluginConfig

EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"


class RedactConfig(PluginConfig):
    """Regular expressions to mask, and the mask."""

    patterns: list[str] = Field(default_factory=lambda: [EMAIL], min_length=1)
    replacement: str = "[REDACTED]"
    outputs: bool = True

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return value


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

    async def before_call(self, ctx: CallContext) -> ProviderResponse | None:
        """Mask prompts; never answers by itself."""
        messages = [
            m.model_copy(update={"content": self.redact(m.content)}) for m in ctx.request.messages
        ]
        ctx.request = ctx.request.model_copy(update={"messages": messages})
        return None

    async def after_call(self, ctx: CallContext, response: ProviderResponse) -> ProviderResponse:
        """Mask the answer too, unless `outputs` is off."""
        if not self.config.outputs:
            return response
        return response.model_copy(update={"text": self.redact(response.text)})
