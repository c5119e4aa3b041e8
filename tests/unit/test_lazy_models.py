"""Models most processes never use are built when first used, not at import (#22): a worker's
start-up leaves them unbuilt, and the first validation builds them and validates as before."""

from __future__ import annotations

import pytest

from tests.unit.test_lean_redis import _run

#: Built only when a process first uses them.
LAZY = (
    "providers.openai._Response",
    "providers.openai._Embeddings",
    "providers.anthropic._Message",
    "schemas.structured.StructuredRecord",
    "workers.protocol.dead_letter.DeadLetter",
)


def test_a_worker_start_up_leaves_them_unbuilt() -> None:
    code = (
        "import importlib, workers.process\n"
        f"for name in {LAZY!r}:\n"
        "    module, cls = name.rsplit('.', 1)\n"
        "    print(getattr(importlib.import_module(module), cls).__pydantic_complete__)\n"
    )
    assert _run(code).splitlines() == ["False"] * len(LAZY)


def test_the_first_validation_builds_them_and_validates_as_before() -> None:
    from pydantic import ValidationError

    from providers.anthropic import _Message
    from providers.openai import _Response

    answer = _Message.model_validate({"content": [{"type": "text", "text": "hi"}]})
    assert answer.content[0].text == "hi"
    assert answer.usage.input_tokens is None
    assert _Message.__pydantic_complete__
    with pytest.raises(ValidationError):
        _Response.model_validate({"output": "not a list"})
    assert _Response.model_validate({"output": []}).output == []
