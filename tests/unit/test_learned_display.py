"""How learned provider buckets read back for `batchyard providers` (#17)."""

from __future__ import annotations

from workers.protocol.learned import LearnedBucket, learned, scan_pattern, show, state_keys


def test_a_learned_bucket_refills_to_now_and_says_when_it_is_full() -> None:
    raw = [b"600", b"0.01", b"100", b"1000", None, None, None, None]
    requests, tokens = learned(raw, now_ms=11_000)  # 10 s later: +100
    assert requests == LearnedBucket(limit=600, remaining=200, full_in_s=40.0)
    assert tokens is None
    assert show(requests) == "200/600, full in 40s" and show(tokens) == "-"


def test_garbage_reads_as_nothing_learned() -> None:
    assert learned([b"x", b"1", b"1", b"1", b"1", None, b"1", b"1"], 0) == (None, None)


def test_model_scopes_are_found_among_their_other_keys_and_globs_are_escaped() -> None:
    prefix = "ns:rl:ep[1]:model:"
    assert scan_pattern(prefix) == "ns:rl:ep\\[1\\]:model:*"
    found = [f"{prefix}b".encode(), f"{prefix}a:leases", f"{prefix}a", f"{prefix}a:window", "x"]
    assert state_keys(found, prefix) == [f"{prefix}a", f"{prefix}b"]
