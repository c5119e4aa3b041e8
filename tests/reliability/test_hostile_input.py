"""Hostile and malformed input lines: each gets a clear LineError; nothing else escapes."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.submit import ChunkBuilder, numbered
from schemas.batch_lines import LineError, parse_line
from schemas.config import parse_config
from schemas.request import LLMRequest
from workers.protocol.keys import Keys

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["custom_id", "method", "url", "body", "params", "messages", "model"])
line_shaped = st.dictionaries(keys, json_values, max_size=5)


def outcome(raw: bytes) -> LLMRequest | LineError:
    try:
        return parse_line(raw, 7)
    except LineError as err:
        assert err.line == 7 and str(err).startswith("line 7: ")
        return err


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_anything_but_line_errors(raw: bytes) -> None:
    outcome(raw)


@settings(max_examples=300, deadline=None)
@given(line_shaped)
def test_line_shaped_json_is_a_request_or_a_named_error(obj: dict[str, object]) -> None:
    result = outcome(orjson.dumps(obj))
    if isinstance(result, LLMRequest):
        assert result.custom_id == obj["custom_id"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=80) | line_shaped.map(orjson.dumps), min_size=1, max_size=20))
def test_one_bad_line_never_affects_another(lines: list[bytes]) -> None:
    good = orjson.dumps({"custom_id": "good", "messages": [{"role": "user", "content": "hi"}]})
    config = parse_config({"endpoints": {"mock": {"provider": "mock"}}})
    chunk = ChunkBuilder("b", Keys(), config).build(list(numbered([*lines, good])))
    assert "good" in chunk.enqueued_ids
    assert len(chunk.enqueued_ids) + len(chunk.errors) == len(list(numbered([*lines, good])))


def test_extreme_values_are_named_errors() -> None:
    cases = [
        b'{"custom_id": "a", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"[" * 100_000,
        b'{"custom_id": "a", "max_tokens": 1' + b"0" * 400 + b', "messages": []}',
        b'{"custom_id": "../../etc/passwd", "messages": [{"role": "user", "content": "x"}]}',
        b'{"custom_id": "\\u0000", "messages": []}',
        b'{"custom_id": "a", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    ]
    results = [outcome(raw) for raw in cases]
    assert all(isinstance(r, LineError) for r in results[:3])
    # A path-like id is just a string: it is accepted and never used as a path.
    assert isinstance(results[3], LLMRequest)
    assert isinstance(results[4], LineError) and results[4].field == "custom_id"
    assert isinstance(results[5], LineError) and "not valid JSON" in str(results[5])
