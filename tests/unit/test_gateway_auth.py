"""Bearer keys: matched by sha256 digest, every key compared every time."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from producers.gateway import auth
from producers.gateway.auth import KeyRing, bearer_token, hash_token
from producers.gateway.config import ApiKey


def key(name: str, token: str, **extra: str) -> ApiKey:
    return ApiKey(name=name, sha256=hash_token(token), **extra)  # type: ignore[arg-type]


def test_hash_is_the_sha256_hex_digest_of_the_token() -> None:
    assert hash_token("sk-1") == hashlib.sha256(b"sk-1").hexdigest()


def test_identify_finds_the_matching_key_only() -> None:
    ring = KeyRing([key("a", "sk-a"), key("b", "sk-b", role="read", owner="a")])
    found = ring.identify("sk-b")
    assert found is not None and (found.name, found.role, found.tenant) == ("b", "read", "a")
    assert ring.identify("sk-c") is None
    assert ring.identify("") is None


def test_identify_compares_against_every_key_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    ring = KeyRing([key(f"k{i}", f"sk-{i}") for i in range(5)])
    assert ring.identify("sk-0") is not None  # the first key matches: no early exit
    assert len(calls) == 5


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer sk-1", "sk-1"),
        ("bearer   sk-1 ", "sk-1"),
        ("Basic abc", None),
        ("Bearer", None),
        ("sk-1", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
