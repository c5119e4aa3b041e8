"""The limiter's Lua, driven with a synthetic clock against a real Redis."""

from __future__ import annotations

from collections import deque
from itertools import count

import pytest
import redis

from workers.protocol.keys import LIMIT_WINDOW_MS, LimitKeys, pause_until_s
from workers.protocol.scripts import Lua, source

pytestmark = pytest.mark.integration
SCOPE = LimitKeys.of("t:rl:ep")
K = len(SCOPE)
ADMIT, RELEASE, PAUSE = (source(s) for s in (Lua.LIMIT_ADMIT, Lua.LIMIT_RELEASE, Lua.LIMIT_PAUSE))
#: Release arguments of an answer without limit headers: not refunded, no estimate, and
#: (limit, remaining, reset ms) unknown for both buckets.
NO_NEWS = (0, 0, -1, -1, -1, -1, -1, -1, 0)


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


LEASES = count()


def admit(
    r: redis.Redis,
    now_ms: float,
    *,
    rpm: int = 0,
    tpm: int = 0,
    conc: int = 0,
    tokens: int = 1,
    lease: str | None = None,
    ttl_ms: int = 1000,
) -> float:
    """0 when admitted, else the wait in ms the script asks for (each call is a new lease
    unless `lease` names one, as each worker call is)."""
    lease = lease or f"l{next(LEASES)}"
    ok, wait, _ = r.eval(ADMIT, K, *SCOPE, now_ms, lease, ttl_ms, tokens, 0, rpm, tpm, conc)
    return 0.0 if int(ok) else float(wait)


def max_in_window(times: list[float], window_ms: float) -> int:
    best, q = 0, deque[float]()
    for t in times:
        q.append(t)
        while q[0] <= t - window_ms:
            q.popleft()
        best = max(best, len(q))
    return best


@pytest.mark.parametrize("rpm", [60, 600, 6000])
def test_rpm_never_exceeded_in_any_minute_and_nearly_all_used(r: redis.Redis, rpm: int) -> None:
    # Given callers trying far faster than the limit for two minutes of synthetic time,
    step_ms = min(60_000 / rpm / 3, 20.0)
    admitted, t = [], 0.0
    while t < 120_000:
        if admit(r, t, rpm=rpm) == 0:
            admitted.append(t)
        t += step_ms
    # then no 60 s window holds more than the limit, and the limit is nearly all used.
    assert max_in_window(admitted, 60_000) <= rpm
    assert len(admitted) >= 0.97 * 2 * rpm, len(admitted)


def test_a_configured_cap_is_usable_at_once_then_as_admissions_leave_the_window(
    r: redis.Redis,
) -> None:
    # A cap of 600 with nothing admitted yet: all 600 go at once (no smoothed pace),
    assert sum(admit(r, 0, rpm=600) == 0 for _ in range(700)) == 600
    # the next waits until the first of them is a window (60 s + 1 s of slack) old,
    assert admit(r, 0, rpm=600) == pytest.approx(LIMIT_WINDOW_MS)
    assert admit(r, LIMIT_WINDOW_MS - 1, rpm=600) > 0
    # and then the window has room for all 600 again.
    assert sum(admit(r, LIMIT_WINDOW_MS, rpm=600) == 0 for _ in range(700)) == 600


def test_tpm_counts_tokens_in_the_window_and_reconciles_real_usage(r: redis.Redis) -> None:
    tpm, estimate = 60_000, 100
    leases = []
    while admit(r, 0, tpm=tpm, tokens=estimate, lease=f"t{len(leases)}") == 0:
        leases.append(f"t{len(leases)}")
    assert len(leases) == tpm // estimate
    # When calls used fewer tokens than estimated, the release gives the difference back.
    for lease in leases[:100]:
        used = (10, lease, -estimate // 2, 0, 0, 1, 0, estimate, *NO_NEWS[2:])
        r.eval(RELEASE, K, *SCOPE, *used, 0, tpm, 0)
    refunded = 0
    while admit(r, 20, tpm=tpm, tokens=estimate) == 0:
        refunded += 1
    assert refunded == 100 * (estimate // 2) // estimate
    # A request that needs more than the window has room for waits until enough leave it.
    assert admit(r, 30, tpm=tpm, tokens=estimate) == LIMIT_WINDOW_MS - 30


@pytest.mark.parametrize("cost", [20, 37, 500])
def test_tpm_never_exceeded_in_any_minute(r: redis.Redis, cost: int) -> None:
    # Given callers of varying size trying far faster than 6,000 TPM for three minutes,
    tpm, admitted, t, i = 6_000, list[tuple[float, int]](), 0.0, 0
    while t < 180_000:
        i += 1
        tokens = 1 + (i * 7919) % cost
        if admit(r, t, tpm=tpm, tokens=tokens) == 0:
            admitted.append((t, tokens))
        t += 20
    # then no 60 s window holds more than 6,000 tokens, and nearly all are used.
    worst = max(sum(n for u, n in admitted if s - 60_000 < u <= s) for s, _ in admitted)
    assert worst <= tpm
    assert sum(n for _, n in admitted) >= 0.97 * 3 * tpm * 60_000 / LIMIT_WINDOW_MS


def test_concurrency_leases_expire_when_their_worker_dies(r: redis.Redis) -> None:
    assert admit(r, 0, conc=2, lease="a", ttl_ms=300) == 0
    assert admit(r, 0, conc=2, lease="b", ttl_ms=300) == 0
    # A third caller waits while both leases are held...
    assert admit(r, 100, conc=2, lease="c", ttl_ms=300) > 0
    # ...a released lease frees a slot at once...
    r.eval(RELEASE, K, *SCOPE, 150, "a", 0, 0, 0, 1, *NO_NEWS, 0, 0, 2)
    assert admit(r, 150, conc=2, lease="c", ttl_ms=300) == 0
    # ...and a lease nobody releases (its worker was killed) is gone after its TTL.
    assert admit(r, 200, conc=2, lease="d", ttl_ms=300) > 0
    assert admit(r, 301, conc=2, lease="d", ttl_ms=300) == 0


def test_a_pause_stops_admission_until_it_ends(r: redis.Redis) -> None:
    r.eval(PAUSE, 1, SCOPE.pause, 5_000, 0)
    assert admit(r, 0, rpm=6000) == pytest.approx(5_000)
    # a shorter pause does not shorten a longer one
    r.eval(PAUSE, 1, SCOPE.pause, 1_000, 0)
    assert admit(r, 2_000, rpm=6000) == pytest.approx(3_000)
    assert admit(r, 5_001, rpm=6000) == 0


def probe(r: redis.Redis, now_ms: float, lease: str) -> tuple[bool, float, bool]:
    """(admitted, wait_ms, probes) of one unlimited request."""
    ok, wait, probes = r.eval(ADMIT, K, *SCOPE, now_ms, lease, 1000, 1, 0, 0, 0, 0)
    return bool(int(ok)), float(wait), bool(int(probes))


def test_after_a_pause_one_request_probes_and_the_others_wait_for_its_answer(
    r: redis.Redis,
) -> None:
    # Given a 429 that paused the endpoint for 20 s,
    r.eval(PAUSE, 1, SCOPE.pause, 20_000, 0)
    assert probe(r, 19_000, "a") == (False, 1_000, False)
    # when it ends, the first request probes and the next ones poll (1 s) for its answer;
    assert probe(r, 20_000, "a") == (True, 0, True)
    assert probe(r, 20_100, "b") == (False, 1_000, False)
    # a refused probe pauses everyone again for the new retry-after,
    r.eval(RELEASE, K, *SCOPE, 20_200, "a", 0, 0, 0, 0, *NO_NEWS, 0, 0, 0)
    r.eval(PAUSE, 1, SCOPE.pause, 40_200, 20_200)
    assert probe(r, 20_300, "b") == (False, 19_900, False)
    # a probe that never answers is replaced after one pause length,
    assert probe(r, 40_200, "c") == (True, 0, True)
    assert probe(r, 60_100, "d")[0] is False
    assert probe(r, 60_200, "d") == (True, 0, True)
    # and an answered probe lets everyone through at once.
    r.eval(RELEASE, K, *SCOPE, 60_300, "d", 0, 0, 0, 1, *NO_NEWS, 0, 0, 0)
    assert probe(r, 60_300, "e") == (True, 0, False)
    assert probe(r, 60_300, "f") == (True, 0, False)


def test_learned_limits_cap_the_configured_ones(r: redis.Redis) -> None:
    # The provider said 60 rpm although the config says 6000.
    r.eval(RELEASE, K, *SCOPE, 0, "x", 0, 60, 0, 1, *NO_NEWS, 6000, 0, 0)
    admitted, t = 0, 0.0
    while t < 60_000:
        admitted += admit(r, t, rpm=6000) == 0
        t += 50
    assert admitted <= 60


def test_the_pause_key_reads_as_the_moment_it_ends(r: redis.Redis) -> None:
    # (the dashboard's providers page shows it)
    r.eval(PAUSE, 1, SCOPE.pause, 5_000, 0)
    assert pause_until_s(r.get(SCOPE.pause)) == 5.0
    assert pause_until_s(None) is None and pause_until_s(b"garbage") is None


def answer(r: redis.Redis, now_ms: float, lim: int, left: int, reset_ms: float, **kw: int) -> None:
    """An answer whose headers said (limit, remaining, reset) of the request bucket."""
    refunded = kw.get("refunded", 0)
    args = (now_ms, kw.get("lease", "l"), 0, 0, 0, 1 - refunded, refunded, 1)
    r.eval(RELEASE, K, *SCOPE, *args, lim, left, reset_ms, -1, -1, -1, 0, 0, 0, 0)


def test_capacity_the_provider_reports_is_used_at_once_then_its_refill_rate(
    r: redis.Redis,
) -> None:
    # Given an answer that says 599 of 600 requests are left, full again in 100 ms,
    answer(r, 0, 600, 599, 100)
    # then 599 requests go at once, the next waits for the refill (600 a minute),
    burst = 0
    while admit(r, 0) == 0:
        burst += 1
    assert burst == 599
    assert admit(r, 0) == pytest.approx(100, abs=1)
    assert admit(r, 100) == 0
    # and an answer that says none are left makes everyone wait for its refill.
    answer(r, 50_000, 600, 0, 60_000)
    assert admit(r, 50_000) == pytest.approx(100, abs=1)


def test_the_refill_rate_is_what_the_reset_says_and_refusals_are_refunded(
    r: redis.Redis,
) -> None:
    # A server whose 60-request bucket refills in 6 s (10 a second), 30 left:
    answer(r, 0, 60, 30, 3_000)
    for _ in range(30):
        assert admit(r, 0) == 0
    assert admit(r, 0) == pytest.approx(100, rel=0.05)
    # a 429 (without headers) the server did not count gives its request back at once.
    answer(r, 0, -1, -1, -1, refunded=1)
    assert admit(r, 0) == 0
    assert admit(r, 0) > 0


def test_an_answer_never_raises_what_we_counted(r: redis.Redis) -> None:
    # (answers overtake each other: one that says more is older than our admissions)
    answer(r, 0, 600, 100, 50_000)
    answer(r, 0, 600, 300, 30_000)
    burst = 0
    while admit(r, 0) == 0:
        burst += 1
    assert burst == 100


def test_before_the_first_answer_one_request_goes_and_the_others_wait_for_it(
    r: redis.Redis,
) -> None:
    def gated(now_ms: float) -> float:
        ok, wait, _ = r.eval(ADMIT, K, *SCOPE, now_ms, "g", 1000, 1, 1, 0, 0, 0)
        return 0.0 if int(ok) else float(wait)

    assert gated(0) == 0
    assert gated(10) == 50  # its answer is awaited
    answer(r, 20, 600, 590, 1000)
    assert all(gated(30) == 0 for _ in range(590))
    assert gated(30) > 0
    # A provider whose first answer has no limit headers is not gated again.
    r.delete(SCOPE.state)
    assert gated(0) == 0 and gated(1) == 50
    answer(r, 2, -1, -1, -1)
    assert gated(3) == 0 and gated(3) == 0


def test_without_limit_headers_concurrency_grows_until_refused_then_backs_off(
    r: redis.Redis,
) -> None:
    def take(now_ms: float, lease: str) -> bool:
        ok, _, _ = r.eval(ADMIT, K, *SCOPE, now_ms, lease, 60_000, 1, 1, 0, 0, 0)
        return bool(int(ok))

    def give(now_ms: float, lease: str, ok: bool, admitted: float) -> None:
        args = (now_ms, lease, 0, 0, 0, int(ok), 0, 0, -1, -1, -1, -1, -1, -1, admitted)
        r.eval(RELEASE, K, *SCOPE, *args, 0, 0, 0)

    assert take(0, "first")
    give(1, "first", True, 0)  # an answer without limit headers: adaptive from here
    inflight = [f"a{i}" for i in range(30) if take(2, f"a{i}")]
    assert len(inflight) == 10  # it starts at 10 in flight (TCP's initial window)
    for lease in inflight:
        give(3, lease, True, 2)
    assert sum(take(4, f"b{i}") for i in range(40)) == 20  # x2 per round trip (slow start)
    give(5, "b0", False, 4)  # refused: halved, 20 -> 10; a second refusal of that round is
    give(5, "b1", False, 4)  # not news
    assert float(r.hget(SCOPE.state, "aimd") or 0) == 10.0
    for i in range(2, 12):  # after the cut: +1 per round trip (1/limit per clean answer)
        give(6, f"b{i}", True, 4)
    assert float(r.hget(SCOPE.state, "aimd") or 0) == pytest.approx(11.0, abs=0.1)


def test_an_endpoint_cap_and_the_models_adaptive_concurrency_hold_leases_in_their_scopes(
    r: redis.Redis,
) -> None:
    # Two scopes as a worker sends them: the endpoint (max_concurrency 2), then its model,
    # whose first answer had no limit headers (adaptive concurrency, starting at 10).
    endpoint, model = LimitKeys.of("t:rl:two"), LimitKeys.of("t:rl:two:model:m")
    keys = (*endpoint, *model)

    def take(now_ms: float, lease: str) -> bool:
        args = (now_ms, lease, 60_000, 1, 1, 0, 0, 2, 0, 0, 0)
        return bool(int(r.eval(ADMIT, 2 * K, *keys, *args)[0]))

    def give(now_ms: float, lease: str) -> None:
        args = (now_ms, lease, 0, 0, 0, 1, 0, 0, -1, -1, -1, -1, -1, -1, 0, 0, 0, 2, 0, 0, 0)
        r.eval(RELEASE, 2 * K, *keys, *args)

    assert take(0, "first")
    give(1, "first")
    assert r.hget(model.state, "nohdr") == b"1"
    assert take(2, "a") and take(2, "b") and not take(2, "c")  # the endpoint's cap
    assert r.zcard(endpoint.leases) == 2 and r.zcard(model.leases) == 2
    give(3, "a")  # the release frees both scopes' leases
    assert r.zcard(endpoint.leases) == 1 and r.zcard(model.leases) == 1
    assert take(4, "c") and not take(4, "d")


def test_a_bucket_learned_in_the_model_scope_gates_the_requests_of_the_endpoint(
    r: redis.Redis,
) -> None:
    # The endpoint scope has no limits; the model scope learned 2 requests left of 600.
    endpoint, model = LimitKeys.of("t:rl:lb"), LimitKeys.of("t:rl:lb:model:m")
    keys = (*endpoint, *model)
    args = (0, "l", 0, 0, 0, 1, 0, 1, 600, 2, 60_000, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0)
    r.eval(RELEASE, 2 * K, *keys, *args)

    def take(lease: str) -> float:
        ok, wait, _ = r.eval(ADMIT, 2 * K, *keys, 0, lease, 1000, 1, 1, 0, 0, 0, 0, 0, 0)
        return 0.0 if int(ok) else float(wait)

    assert take("a") == 0 and take("b") == 0
    assert take("c") > 0  # the bucket is empty until it refills
    assert not r.exists(endpoint.state) or r.hget(endpoint.state, "lr_lim") is None


def test_the_endpoints_pause_holds_its_models_requests_until_a_probe_answers(
    r: redis.Redis,
) -> None:
    # Two scopes as a worker sends them; a 429 paused the endpoint (its scope) for 5 s.
    endpoint, model = LimitKeys.of("t:rl:pz"), LimitKeys.of("t:rl:pz:model:m")
    keys = (*endpoint, *model)
    r.eval(PAUSE, 1, endpoint.pause, 5_000, 0)

    def take(now_ms: float, lease: str) -> tuple[bool, float, bool]:
        ok, wait, probes = r.eval(ADMIT, 2 * K, *keys, now_ms, lease, 1000, 1, 0, *[0] * 6)
        return bool(int(ok)), float(wait), bool(int(probes))

    assert take(1_000, "a") == (False, 4_000, False)
    # after it, one request probes; its answer ends the pause for everyone.
    assert take(5_000, "b") == (True, 0, True)
    assert take(5_050, "c") == (False, 1_000, False)
    r.eval(RELEASE, 2 * K, *keys, 5_100, "b", 0, 0, 0, 1, *NO_NEWS, *[0] * 6)
    assert r.get(endpoint.pause) is None
    assert take(5_200, "c") == (True, 0, False)


def test_an_admission_alone_sets_its_keys_ttls(r: redis.Redis) -> None:
    # (a batched call sets them once for all its calls: tests/integration/test_script_pipe.py)
    assert admit(r, 0, rpm=10, conc=2, lease="a", ttl_ms=5_000) == 0
    assert 5_000 < r.pttl(SCOPE.leases) <= 10_000
    assert LIMIT_WINDOW_MS < r.pttl(SCOPE.window) <= LIMIT_WINDOW_MS + 1_000
    assert 60_000 < r.pttl(SCOPE.state) <= 120_000
