"""Rate-limit headers in every format the vendors document; garbage is ignored, with a debug log."""

from __future__ import annotations

import logging
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from providers.headers import Limit, RateLimits, parse_duration_s, rate_limits, retry_after_s

NOW = 1_740_435_930.0  # 2025-02-24T22:25:30Z
LOGGER = "batchyard.providers.headers"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),  # OpenAI's documented examples
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("2m59.56s", 179.56),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("17µs", 0.000017),
        ("100ns", 1e-7),
        (".5s", 0.5),
        ("12", 12.0),  # Azure OpenAI: plain seconds
        ("0.25", 0.25),
    ],
)
def test_openai_reset_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


def test_openai_headers_as_documented() -> None:
    limits = rate_limits(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert limits == RateLimits(
        requests=Limit(limit=60, remaining=59, reset_s=1.0),
        tokens=Limit(limit=150000, remaining=149984, reset_s=360.0),
    )


def test_header_names_are_case_insensitive() -> None:
    limits = rate_limits({"X-RateLimit-Remaining-Requests": "7", "X-RATELIMIT-RESET-TOKENS": "2s"})
    assert (limits.requests.remaining, limits.tokens.reset_s) == (7, 2.0)


def test_a_responses_own_headers_are_read_as_they_are() -> None:
    """aiohttp's CIMultiDictProxy is read without a copy, case-insensitively all the same."""
    raw = CIMultiDict({"Content-Type": "application/json", "X-RateLimit-Limit-Tokens": "900"})
    limits = rate_limits(CIMultiDictProxy(raw))
    assert limits.tokens.limit == 900 and limits.requests == Limit()
    assert not rate_limits(CIMultiDictProxy(CIMultiDict({"Content-Type": "text/plain"})))


def test_anthropic_headers_every_family() -> None:
    # Given what Anthropic sent on a real answer (workspace limits: tokens = input + output),
    limits = rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "999",
            "anthropic-ratelimit-requests-reset": "2025-02-24T22:25:30Z",
            "anthropic-ratelimit-tokens-limit": "96000",
            "anthropic-ratelimit-tokens-remaining": "90000",
            "anthropic-ratelimit-tokens-reset": "2025-02-24T22:25:32Z",
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-input-tokens-remaining": "78000",
            "anthropic-ratelimit-input-tokens-reset": "2025-02-24T22:25:32Z",
            "anthropic-ratelimit-output-tokens-limit": "16000",
            "anthropic-ratelimit-output-tokens-remaining": "12000",
            "anthropic-ratelimit-output-tokens-reset": "2025-02-24T22:25:47Z",
        },
        now_s=NOW,
    )
    # then the combined family is the token limit, and input and output are kept apart.
    assert (limits.requests.limit, limits.requests.remaining) == (1000, 999)
    assert limits.requests.reset_s == 0.0
    assert (limits.tokens.limit, limits.tokens.remaining) == (96000, 90000)
    assert limits.tokens.reset_s == pytest.approx(2.0)
    assert (limits.input_tokens.limit, limits.input_tokens.remaining) == (80000, 78000)
    assert limits.input_tokens.reset_s == pytest.approx(2.0)
    assert (limits.output_tokens.limit, limits.output_tokens.remaining) == (16000, 12000)
    assert limits.output_tokens.reset_s == pytest.approx(17.0)


def test_anthropic_without_the_tokens_family_uses_the_input_one() -> None:
    limits = rate_limits(
        {
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": "2025-02-24T22:25:40Z",
        },
        now_s=NOW,
    )
    assert (limits.tokens.limit, limits.tokens.remaining) == (40000, 39000)
    assert limits.tokens.reset_s == pytest.approx(10.0)
    assert limits.output_tokens.limit is None


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("2025-02-24T22:25:40Z", 10.0),
        ("2025-02-24T22:25:40.500Z", 10.5),
        ("2025-02-24T23:25:40+01:00", 10.0),
        ("2025-02-24T22:25:40+00:00", 10.0),
        ("2025-02-24T22:20:00Z", 0.0),  # already past: no wait
    ],
)
def test_anthropic_rfc3339_resets(stamp: str, seconds: float) -> None:
    limits = rate_limits({"anthropic-ratelimit-requests-reset": stamp}, now_s=NOW)
    assert limits.requests.reset_s == pytest.approx(seconds)


def test_a_reset_given_as_a_unix_timestamp_is_a_moment_not_a_delay() -> None:
    limits = rate_limits({"x-ratelimit-reset-requests": str(int(NOW + 30))}, now_s=NOW)
    assert limits.requests.reset_s == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "1.5"}, 1.5),  # not RFC 9110, but the SDKs accept it
        ({"retry-after": formatdate(NOW + 42, usegmt=True)}, 42.0),  # IMF-fixdate
        ({"retry-after": "Monday, 24-Feb-25 22:26:00 GMT"}, 30.0),  # obsolete RFC 850
        ({"retry-after": "Mon Feb 24 22:26:00 2025"}, 30.0),  # obsolete asctime (GMT)
        ({"retry-after": formatdate(NOW - 42, usegmt=True)}, 0.0),  # in the past
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # ms preferred
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # garbage ms falls through
        ({"Retry-After": "3"}, 3.0),
        ({}, None),
    ],
)
def test_retry_after_in_every_documented_form(
    headers: dict[str, str], expected: float | None
) -> None:
    got = retry_after_s(headers, now_s=NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_without_retry_after_the_exhausted_limit_says_when() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "5",
        "anthropic-ratelimit-requests-reset": "2025-02-24T22:26:30Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2025-02-24T22:25:45Z",
    }
    assert retry_after_s(headers, now_s=NOW) == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-ratelimit-remaining-requests", "-1"),  # Azure's "unknown"
        ("x-ratelimit-remaining-requests", "lots"),
        ("x-ratelimit-remaining-requests", "nan"),
        ("x-ratelimit-remaining-requests", "inf"),
        ("x-ratelimit-remaining-requests", "1e999"),
        ("x-ratelimit-remaining-requests", ""),
        ("x-ratelimit-remaining-requests", "5 requests"),
        ("x-ratelimit-reset-requests", "-1s"),
        ("x-ratelimit-reset-requests", "soon"),
        ("x-ratelimit-reset-requests", "1x"),
        ("x-ratelimit-reset-requests", "2025-02-24T22:25:40"),  # no time zone
        ("retry-after", "whenever"),
        ("retry-after", "-5"),
        ("retry-after-ms", "NaN"),
    ],
)
def test_garbage_is_ignored_with_a_debug_log(
    name: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given one garbled header next to a good one,
    headers = {name: value, "x-ratelimit-limit-tokens": "1000"}
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        limits = rate_limits(headers, now_s=NOW)
        wait = retry_after_s(headers, now_s=NOW)
    # then the garbled value reads as absent, the good one still counts,
    assert limits.requests.remaining is None and limits.requests.reset_s is None
    assert limits.tokens.limit == 1000
    assert wait is None
    # and a debug line names the header.
    assert any(name in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_a_huge_garbage_value_is_shortened_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        rate_limits({"anthropic-ratelimit-requests-reset": "x" * 5000})
    (record,) = caplog.records
    assert len(record.getMessage()) < 200


def test_absent_headers_are_an_empty_picture() -> None:
    limits = rate_limits({"content-type": "application/json"})
    assert not limits and limits.wait_s() is None
    # A name that holds "ratelimit-" without starting with a vendor's prefix is no limit
    assert not rate_limits({"x-upstream-ratelimit-limit-requests": "5", "ratelimit-policy": "1"})
    assert rate_limits({"Server": "x", "X-RateLimit-Limit-Requests": "5"}).requests.limit == 5


NAMES = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-output-tokens-remaining",
    "retry-after",
    "retry-after-ms",
]


@given(st.dictionaries(st.sampled_from(NAMES), st.text(max_size=40)))
def test_no_header_value_can_raise(headers: dict[str, str]) -> None:
    limits = rate_limits(headers, now_s=NOW)
    wait = retry_after_s(headers, now_s=NOW)
    assert wait is None or wait >= 0
    assert all(
        v is None or v >= 0
        for v in (limits.requests.remaining, limits.requests.reset_s, limits.requests.limit)
    )
