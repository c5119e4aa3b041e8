"""What the dashboard shows, computed from the records workers keep: a batch's pace, cost,
error causes and failed requests with their hops, and each endpoint's limits and health
(as the typed records of `page_data`)."""

from __future__ import annotations

import math
import time

import orjson

from producers.gateway.config import ApiKey
from producers.gateway.page_data import (
    FAILURES_PER_PAGE,
    BatchDetail,
    BatchInfo,
    BatchSummary,
    Breaker,
    Calls,
    Cause,
    Counts,
    EndpointLimits,
    EndpointStats,
    EndpointUsage,
    ErrorCount,
    Failure,
    FailureFilter,
    FailureTable,
    Hop,
    Latency,
    LineProblem,
    RouteHealth,
    Sample,
    StructuredOutput,
    StructuredRound,
    TenantUsage,
)
from producers.gateway.state import Gateway
from producers.gateway.views import FINISHED, BatchState, load_batches, text
from producers.structured_report import StructuredReport
from schemas.config import AppConfig, EndpointConfig
from schemas.request import RouteHop
from workers.protocol.batch_record import parse_record
from workers.protocol.dead_letter import DeadLetter
from workers.protocol.health import read_snapshot
from workers.protocol.keys import LIMIT_WINDOW_MS, pause_until_s
from workers.protocol.learned import FIELDS as LEARNED_FIELDS
from workers.protocol.learned import LearnedScope, learned, scan_pattern, state_keys
from workers.protocol.results import entry

#: Dead letters read to count error causes; beyond it the counts are a sample (`partial`).
MAX_SCANNED = 1000
#: Failed requests whose dead letters the endpoint filter reads, at most.
MAX_FILTERED = 5000
#: Results read for the structured-output report; beyond it the report is a sample.
MAX_STRUCTURED = 5000


def priced(config: AppConfig, route: list[RouteHop]) -> bool:
    """Whether any endpoint of a route has a price, i.e. whether its cost can be known."""
    return any(
        (ep := config.endpoints.get(hop.endpoint)) is not None and bool(ep.prices) for hop in route
    )


def _route(core: dict[str, str]) -> list[RouteHop]:
    try:
        return [RouteHop.model_validate(h) for h in orjson.loads(core.get("route") or "[]")]
    except (orjson.JSONDecodeError, ValueError):
        return []


def counts_of(core: dict[str, str]) -> Counts:
    """The batch record's counts with unsent requests taken out of `failed`."""
    if not core:
        return Counts(total=0, completed=0, failed=0)
    c = parse_record("", core).counts
    return Counts(
        total=c.total,
        completed=c.completed,
        failed=max(0, c.failed - c.cancelled - c.expired),
        expired=c.expired,
        cancelled=c.cancelled,
    )


def batch_summary(
    state: BatchState, config: AppConfig | None = None, now: float | None = None
) -> BatchSummary:
    """One batch as the dashboard lists it: status, what became of its requests, pace and
    cost (unknown without `config` or when no endpoint of its route has a price)."""
    now = time.time() if now is None else now
    obj = state.to_openai()
    counts = counts_of(state.core)
    done = counts.answered
    rate_per_s, eta_s, started_at = 0.0, None, float(obj["created_at"])
    cost_usd: float | None = None
    if state.core:
        batch = parse_record(state.id, state.core)
        # Answers per second: requests a cancel or the window ended unsent are no work done.
        elapsed_s = max(1e-6, (batch.finished_at or now) - batch.created_at)
        rate_per_s = done / elapsed_s
        left = counts.total - done - counts.unsent
        eta_s = left / rate_per_s if rate_per_s > 0 else None
        started_at = batch.created_at
        if batch.cost_usd > 0 or (config is not None and priced(config, _route(state.core))):
            cost_usd = batch.cost_usd
    finished = obj["status"] in FINISHED
    return BatchSummary(
        id=state.id,
        status=obj["status"],
        finished=finished,
        request_counts=counts,
        done=done,
        percent=min(100.0, 100.0 * done / counts.total) if counts.total else 0.0,
        rate_per_s=rate_per_s,
        eta_s=None if finished else eta_s,
        cost_usd=cost_usd,
        created_at=obj["created_at"],
        started_at=started_at,
        finished_at=float(state.core["finished_at"]) if state.core.get("finished_at") else None,
        priority=state.gw.get("priority", "normal"),
        metadata=obj["metadata"] or {},
        errors=tuple(map(LineProblem.parse, (obj["errors"] or {}).get("data", []))),
    )


async def batch_detail(
    gw: Gateway, state: BatchState, flt: FailureFilter | None = None
) -> BatchDetail:
    """The batch page: the summary, what it was created with, error causes, the page of
    failed requests `flt` asks for, progress samples and its endpoints' health."""
    flt = flt or FailureFilter()
    summary = batch_summary(state, gw.app_config)
    causes: dict[str, int] = {}
    scanned = 0
    async for _key, raw in gw.redis.hscan_iter(gw.keys.failed(state.id), count=200):
        code = DeadLetter.code_of(raw)
        causes[code] = causes.get(code, 0) + 1
        scanned += 1
        if scanned >= MAX_SCANNED:
            break
    letters, table = await _failed_page(gw, state.id, flt)
    timeline = await gw.timeline.read(state.id)
    route = {hop.endpoint for hop in _route(state.core)}
    return BatchDetail.of(
        summary,
        causes=tuple(sorted((Cause(c, n) for c, n in causes.items()), key=lambda c: -c.count)),
        causes_partial=scanned >= MAX_SCANNED,
        failures=await _failures(gw, state.id, letters),
        timeline=_series(summary, timeline),
        info=await _info(gw, state),
        health=tuple(
            RouteHealth(e.endpoint, e.breaker.state)
            for e in await provider_stats(gw)
            if e.endpoint in route
        ),
        failure_filter=flt,
        failure_table=table,
        structured=await structured_output(gw, state.id),
    )


async def structured_output(gw: Gateway, batch_id: str) -> StructuredOutput | None:
    """The structured-output report of a batch's results (the first `MAX_STRUCTURED`), or
    None when the first page of them holds no structured answer."""
    report, after, read = StructuredReport(), "0-0", 0
    while read < MAX_STRUCTURED:
        page = await gw.client.results(batch_id, after, count=min(1000, MAX_STRUCTURED - read))
        if not page.read:
            break
        for _sid, _key, result in page.entries:
            report.add(result)
        read, after = read + page.read, page.cursor
        if not report.structured:
            break  # a first page without structured answers: a plain batch, read no further
    if not report.structured:
        return None
    data = report.to_dict(top=8)
    partial = read >= MAX_STRUCTURED and bool(
        (await gw.client.results(batch_id, after, count=1)).read
    )
    return StructuredOutput(
        structured=data["structured"],
        valid=data["valid"],
        validity=data["validity"],
        tokens_per_valid=data["tokens_per_valid"],
        cost_per_valid_usd=data["cost_per_valid_usd"],
        rounds=tuple(
            StructuredRound(
                round=r["round"],
                answers=r["answers"],
                valid_answers=r["valid_answers"],
                answer_validity=r["answer_validity"],
                valid_after_round=r["valid_after_round"],
            )
            for r in data["by_round"]
        ),
        errors=tuple(ErrorCount(k, n) for k, n in data["errors_all_rounds"].items()),
        partial=partial,
    )


async def _info(gw: Gateway, state: BatchState) -> BatchInfo:
    obj = state.to_openai()
    stored = await gw.store.get(obj["input_file_id"]) if obj["input_file_id"] else None
    return BatchInfo(
        endpoint=obj["endpoint"],
        input_file_id=obj["input_file_id"],
        input_file_name=stored.filename if stored and stored.owner == state.owner else None,
        completion_window=obj["completion_window"],
        expires_at=obj["expires_at"],
        output_file_id=obj["output_file_id"],
        error_file_id=obj["error_file_id"],
    )


async def _letters(gw: Gateway, batch_id: str, keys: list[str]) -> list[tuple[str, DeadLetter]]:
    """The dead letters of `keys` (a key retried meanwhile has none and is left out)."""
    if not keys:
        return []
    raw = await gw.redis.hmget(gw.keys.failed(batch_id), keys)
    return [(k, DeadLetter.parse(r)) for k, r in zip(keys, raw, strict=True) if r is not None]


async def _failed_page(
    gw: Gateway, batch_id: str, flt: FailureFilter
) -> tuple[list[tuple[str, DeadLetter]], FailureTable]:
    """The page of failed requests `flt` asks for, in custom_id order. The custom_id filter
    reads only the keys; the endpoint filter reads the dead letters too, of at most
    `MAX_FILTERED` requests (then the table says it is partial)."""
    keys = sorted(text(k) for k in await gw.redis.hkeys(gw.keys.failed(batch_id)))
    if flt.custom_id:
        keys = [k for k in keys if flt.custom_id in k]
    start = (flt.page - 1) * FAILURES_PER_PAGE
    end = start + FAILURES_PER_PAGE
    if not flt.endpoint:
        table = FailureTable(matching=len(keys), has_next=len(keys) > end)
        return await _letters(gw, batch_id, keys[start:end]), table
    matched: list[tuple[str, DeadLetter]] = []
    for i in range(0, min(len(keys), MAX_FILTERED), 500):
        chunk = await _letters(gw, batch_id, keys[i : min(i + 500, MAX_FILTERED)])
        matched += [(k, d) for k, d in chunk if any(h.endpoint == flt.endpoint for h in d.route)]
    table = FailureTable(
        matching=len(matched), partial=len(keys) > MAX_FILTERED, has_next=len(matched) > end
    )
    return matched[start:end], table


async def _failures(
    gw: Gateway, batch_id: str, letters: list[tuple[str, DeadLetter]]
) -> tuple[Failure, ...]:
    """Failed requests with the hops they went through (from their stored result)."""
    if not letters:
        return ()
    raw = await gw.redis.hmget(gw.keys.done(batch_id), [k for k, _ in letters])
    ids = [text(sid) if sid else "" for sid in raw]
    stored = [sid for sid in ids if sid]
    pipe = gw.redis.pipeline(transaction=False)
    for sid in stored:
        pipe.xrange(gw.keys.stream(batch_id), sid, sid, count=1)
    found = dict(zip(stored, await pipe.execute(), strict=True))
    rows = []
    for (key, letter), sid in zip(letters, ids, strict=True):
        read = found.get(sid)
        result = entry(*read[0])[2] if read else None
        hops = tuple(
            Hop(a.endpoint, a.model, a.error, a.latency_ms)
            for a in (result.attempts if result else [])
        )
        if not hops:  # no result to read: the route it was sent along
            hops = tuple(Hop(h.endpoint, h.model, None) for h in letter.route)
        error = result.error if result else None
        rows.append(
            Failure(
                key=key,
                kind=letter.request.kind,
                status=letter.status,
                code=letter.code,
                message=error.message if error else "",
                hops=hops,
            )
        )
    return tuple(rows)


def _series(summary: BatchSummary, samples: list[tuple[float, int]]) -> tuple[Sample, ...]:
    """Cumulative (epoch s, done) points from the start to now (or the end)."""
    start = summary.started_at
    end = summary.finished_at or time.time()
    points: list[Sample] = [(start, 0.0)]
    points += [(t, float(d)) for t, d in samples if start < t < end]
    points.append((end, float(summary.done)))
    return tuple(points)


def _window_fill(used: float, limit: int) -> float:
    """How much of a configured cap the last minute's admissions (`lua/lib/window`) hold: 1.0
    means it is throttling."""
    return min(1.0, max(0.0, used / limit))


def _limit(configured: int | None, learned: bytes | None) -> int | None:
    announced = int(learned) if learned else 0
    if configured and announced:
        return min(configured, announced)
    return configured


async def _learned(gw: Gateway, endpoint: str, now_ms: float) -> tuple[LearnedScope, ...]:
    """What the workers learned of an endpoint's buckets, per model."""
    prefix = gw.keys.limit(endpoint, "").state
    found = [k async for k in gw.redis.scan_iter(match=scan_pattern(prefix), count=200)]
    keys = state_keys(found, prefix)
    pipe = gw.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, list(LEARNED_FIELDS))
    out = []
    for key, raw in zip(keys, await pipe.execute(), strict=True):
        requests, tokens = learned(raw, now_ms)
        if requests is not None or tokens is not None:
            out.append(LearnedScope(key[len(prefix) :], requests, tokens))
    return tuple(out)


async def provider_stats(gw: Gateway, *, with_learned: bool = False) -> list[EndpointStats]:
    """Each configured endpoint: limits, current use, latency, success rate, breaker; with
    `with_learned`, the provider's buckets as the workers learned them (a scan per endpoint:
    only the providers page asks)."""
    names = list(gw.app_config.endpoints)
    now = time.time()
    pipe = gw.redis.pipeline(transaction=False)
    for name in names:
        limit = gw.keys.limit(name)
        pipe.hgetall(gw.keys.health(name))
        pipe.lrange(gw.keys.latency(name), 0, -1)
        pipe.hmget(limit.state, "win_t", "learned_rpm", "learned_tpm")
        pipe.zcount(limit.window, now * 1000 - LIMIT_WINDOW_MS, math.inf)
        pipe.zcount(limit.leases, now * 1000, math.inf)
        pipe.get(limit.pause)
    replies = await pipe.execute()
    out = []
    for i, name in enumerate(names):
        health, latencies, state, admitted, in_flight, pause = replies[6 * i : 6 * i + 6]
        ep: EndpointConfig = gw.app_config.endpoints[name]
        snap = read_snapshot(health, latencies, name, ep.breaker.window_s)
        calls = snap.ok_window + snap.fail_window
        rpm, tpm = _limit(ep.rpm, state[1]), _limit(ep.tpm, state[2])
        tokens = float(state[0]) if state[0] and admitted else 0.0
        paused_until = pause_until_s(pause)
        out.append(
            EndpointStats(
                endpoint=name,
                provider=ep.provider,
                models=tuple(sorted({m for m in (ep.model, *ep.models.values()) if m})),
                limits=EndpointLimits(rpm=rpm, tpm=tpm, max_concurrency=ep.max_concurrency),
                usage=EndpointUsage(
                    rpm=round(calls * 60 / ep.breaker.window_s, 1),
                    tpm=round(snap.tokens_window * 60 / ep.breaker.window_s, 1),
                    rpm_fill=_window_fill(admitted, rpm) if rpm else None,
                    tpm_fill=_window_fill(tokens, tpm) if tpm else None,
                    in_flight=int(in_flight) if ep.max_concurrency else None,
                    paused_until=paused_until if paused_until and paused_until > now else None,
                ),
                window_s=ep.breaker.window_s,
                latency_ms=Latency(p50=snap.p50_ms, p95=snap.p95_ms),
                success_rate=snap.success_rate,
                calls=Calls(ok=snap.total_ok, failed=snap.total_fail),
                breaker=Breaker(
                    state=snap.state, open_until=snap.open_until if snap.state == "open" else None
                ),
                learned=await _learned(gw, name, now * 1000) if with_learned else (),
            )
        )
    return out


#: Newest batches of a tenant the providers page sums up (bounds its cost per refresh).
TENANT_SCAN = 200


async def tenant_usage(gw: Gateway, key: ApiKey) -> TenantUsage:
    """The caller's tenant's own work (its newest batches) and one word of service health."""
    listing = gw.gkeys.owner_batches(key.tenant)
    ids = [text(raw) for raw in await gw.redis.zrevrange(listing, 0, TENANT_SCAN - 1)]
    states = [s for s in await load_batches(gw.redis, gw.keys, gw.gkeys, ids) if s is not None]
    running = pending = answered = failed = 0
    for state in states:
        counts = counts_of(state.core)
        answered += counts.answered
        failed += counts.failed
        if state.status() not in FINISHED:
            running += 1
            pending += max(0, counts.total - counts.answered - counts.unsent)
    breakers = await provider_stats(gw)
    rpm = key.rate_per_min or gw.config.rate_per_min
    return TenantUsage(
        tenant=key.tenant,
        running=running,
        pending=pending,
        answered=answered,
        failed=failed,
        scanned=len(states),
        rate_per_min=rpm or None,
        service="operational" if all(e.breaker.state == "closed" for e in breakers) else "degraded",
    )
