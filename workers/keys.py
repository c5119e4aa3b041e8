"""Every Redis key name and Lua script of batchyard, in one place."""

from __future__ import annotations

from typing import Literal

EXECUTE_ACTOR = "batchyard.execute"
QUEUE_PREFIX = "llm."

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

#: Normal-priority batches are spread over this many queues ("lanes") per endpoint: each lane
#: has its own consumer, so batches on different lanes interleave instead of queueing behind
#: each other. Fixed, because producers and every worker must agree on the queue names.
FAIR_LANES = 4
#: Lane suffixes: "" (the plain `llm.<endpoint>` queue), "@1".."@3", "@high", "@low". `@` is
#: not allowed in endpoint names, so a lane never collides with another endpoint's queue.
NORMAL_LANES: tuple[str, ...] = ("", *(f"@{i}" for i in range(1, FAIR_LANES)))
LANES: tuple[str, ...] = ("@high", *NORMAL_LANES, "@low")

#: dramatiq orders prefetched messages by their actor's priority (lower first), so one actor
#: per priority level with the same body makes high-priority work jump the local line.
ACTORS: dict[Priority, tuple[str, int]] = {
    "high": (f"{EXECUTE_ACTOR}.high", 0),
    "normal": (EXECUTE_ACTOR, 10),
    "low": (f"{EXECUTE_ACTOR}.low", 20),
}


def queue_name(endpoint: str, lane: str = "") -> str:
    """The dramatiq queue that feeds an endpoint on a lane ("" is the plain queue)."""
    return f"{QUEUE_PREFIX}{endpoint}{lane}"


def endpoint_queues(endpoint: str) -> list[str]:
    """Every lane queue of an endpoint."""
    return [queue_name(endpoint, lane) for lane in LANES]


def lane_priority(lane: str) -> Priority:
    """The priority a lane serves."""
    return "high" if lane == "@high" else "low" if lane == "@low" else "normal"


def actor_for(lane: str) -> str:
    """The actor name messages on `lane` are sent to."""
    return ACTORS[lane_priority(lane)][0]


def pick_lane(priority: Priority, depths: list[int], turn: int) -> str:
    """The lane for a new batch: its priority's own lane, or for normal batches the normal lane
    with the fewest waiting messages (`depths`, in `NORMAL_LANES` order), ties broken
    round-robin by `turn` so consecutive batches land on different lanes."""
    if priority != "normal":
        return f"@{priority}"
    n = len(NORMAL_LANES)
    best = min(range(n), key=lambda i: (depths[i], (i - turn) % n))
    return NORMAL_LANES[best]


class Keys:
    """Key names under one namespace (default `batchyard`)."""

    def __init__(self, namespace: str = "batchyard") -> None:
        self.ns = namespace
        #: dramatiq's own keys live under this prefix: `batchyard:dq:llm.mock`, ...
        self.dramatiq_ns = f"{namespace}:dq"
        self.batches = f"{namespace}:batches"

    @property
    def lane_turn(self) -> str:
        """Counter that spreads new batches round-robin over the normal lanes."""
        return f"{self.ns}:lane_turn"

    def batch(self, batch_id: str) -> str:
        """Hash: status, counts, timestamps, metadata of a batch."""
        return f"{self.ns}:batch:{batch_id}"

    def ids(self, batch_id: str) -> str:
        """Set of custom_ids in a batch: finds duplicate lines without producer memory."""
        return f"{self.ns}:batch:{batch_id}:ids"

    def done(self, batch_id: str) -> str:
        """Hash result key -> stream id: the exactly-once guard of result writes."""
        return f"{self.ns}:batch:{batch_id}:done"

    def failed(self, batch_id: str) -> str:
        """Hash key -> {status, code, request, route} of requests that ended in error: the
        dead letters `retry --failed` re-runs and `failures` lists by cause."""
        return f"{self.ns}:batch:{batch_id}:failed"

    def stream(self, batch_id: str) -> str:
        """Stream of results in completion order; collectors read it with a cursor."""
        return f"{self.ns}:batch:{batch_id}:results"

    def queue(self, queue: str) -> str:
        """dramatiq's list of message ids of a queue."""
        return f"{self.dramatiq_ns}:{queue}"

    def queue_msgs(self, queue: str) -> str:
        """dramatiq's hash of message id -> message of a queue."""
        return f"{self.dramatiq_ns}:{queue}.msgs"


# Reads the next SEP-terminated field of `blob` from `pos` (both locals of the caller).
_FIELD = """
local blob, pos
local function field()
  local stop = string.find(blob, '\\0', pos, true)
  local value = string.sub(blob, pos, stop - 1)
  pos = stop + 1
  return value
end
"""

# Marks a batch finished once it is sealed (all lines submitted) and every line has a result.
_FINISH = """
local function finish_if_done(batch, now)
  local v = redis.call('hmget', batch, 'total', 'completed', 'failed', 'sealed', 'status')
  if v[4] == '1' and tonumber(v[2] or 0) + tonumber(v[3] or 0) >= tonumber(v[1] or 0) then
    if v[5] == 'in_progress' or v[5] == 'validating' or v[5] == 'finalizing' then
      redis.call('hset', batch, 'status', 'completed', 'finished_at', now)
    elseif v[5] == 'cancelling' then
      redis.call('hset', batch, 'status', 'cancelled', 'finished_at', now)
    end
  end
end
"""

#: Channel (after the dramatiq namespace) on which ENQUEUE names the queues it filled.
WAKE_CHANNEL = "__wake__"

#: Separates fields in the ENQUEUE blob; JSON text and custom_ids never contain a NUL byte.
SEP = b"\0"

#: KEYS: batch, ids. ARGV: dramatiq_ns, ttl_s, blob of (custom_id SEP queue SEP id SEP data SEP)*.
#: One blob instead of four arguments per message: packing 4,000 arguments per chunk cost the
#: producer more than everything else together. Enqueues each message whose custom_id is new
#: to the batch exactly as dramatiq's own `enqueue` does (hset msgs + rpush ids); returns the
#: 0-based positions of duplicates. Publishes each queue it filled on `<dramatiq_ns>:__wake__`
#: (`WAKE_CHANNEL`), so idle workers fetch at once instead of at their next poll.
ENQUEUE = (
    _FIELD
    + """
local batch, ids = KEYS[1], KEYS[2]
local ns, ttl = ARGV[1], tonumber(ARGV[2])
blob, pos = ARGV[3], 1
local dups, added, n, woken = {}, 0, 0, {}
while pos <= #blob do
  local cid, queue, mid, data = field(), field(), field(), field()
  if redis.call('sadd', ids, cid) == 1 then
    local q = ns .. ':' .. queue
    redis.call('hset', q .. '.msgs', mid, data)
    redis.call('rpush', q, mid)
    added = added + 1
    woken[queue] = true
  else
    dups[#dups + 1] = n
  end
  n = n + 1
end
redis.call('hincrby', batch, 'total', added)
redis.call('expire', ids, ttl)
redis.call('expire', batch, ttl)
-- Wake idle consumers of these queues now rather than at their next poll.
for queue in pairs(woken) do redis.call('publish', ns .. ':__wake__', queue) end
return dups
"""
)

#: ARGV: namespace, ttl_s, now, blob of (batch_id, key, status, data, count_in_total, dead,
#: cost), each field followed by SEP (one argument: packing seven per result cost workers
#: more CPU than the script itself).
#: Stores each result only if none exists for its (batch, key): a redelivered message cannot
#: create a second one. `dead` (may be empty) is the dead-letter record of a failed request.
#: Many results per call: workers coalesce writes under load.
#: Returns one 1 (stored) or 0 (duplicate) per result.
WRITE_RESULTS = (
    _FINISH
    + _FIELD
    + """
local ns, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
blob, pos = ARGV[4], 1
local out, touched = {}, {}
while pos <= #blob do
  local bid, key, status, data = field(), field(), field(), field()
  local count, dead, cost = field(), field(), field()
  local prefix = ns .. ':batch:' .. bid
  local batch, done, stream = prefix, prefix .. ':done', prefix .. ':results'
  if redis.call('hsetnx', done, key, '') == 0 then
    out[#out + 1] = 0
  else
    local sid = redis.call('xadd', stream, '*', 'k', key, 'r', data)
    redis.call('hset', done, key, sid)
    if status == 'succeeded' then
      redis.call('hincrby', batch, 'completed', 1)
    else
      redis.call('hincrby', batch, 'failed', 1)
      if dead ~= '' then
        redis.call('hset', prefix .. ':failed', key, dead)
        redis.call('expire', prefix .. ':failed', ttl)
      end
    end
    redis.call('hincrby', batch, 'n_' .. status, 1)
    if count == '1' then redis.call('hincrby', batch, 'total', 1) end
    if tonumber(cost) > 0 then redis.call('hincrbyfloat', batch, 'cost_usd', cost) end
    touched[bid] = true
    out[#out + 1] = 1
  end
end
for bid in pairs(touched) do
  local prefix = ns .. ':batch:' .. bid
  finish_if_done(prefix, now)
  redis.call('expire', prefix, ttl)
  redis.call('expire', prefix .. ':done', ttl)
  redis.call('expire', prefix .. ':results', ttl)
end
return out
"""
)

#: KEYS: batch, done, failed. ARGV: dramatiq_ns, blob as for ENQUEUE (custom_id = result key).
#: Re-runs dead letters: for each key still in `failed`, forget its result (so the new one
#: can be stored), take it out of the counts, and enqueue the new message. Atomic, so two
#: concurrent `retry --failed` cannot run a request twice. Returns how many were enqueued.
RETRY_FAILED = (
    _FIELD
    + """
local batch, done, failed = KEYS[1], KEYS[2], KEYS[3]
local ns = ARGV[1]
blob, pos = ARGV[2], 1
local added = 0
while pos <= #blob do
  local key, queue, mid, data = field(), field(), field(), field()
  local dead = redis.call('hget', failed, key)
  if dead then
    local status = cjson.decode(dead)['status']
    redis.call('hdel', failed, key)
    redis.call('hdel', done, key)
    redis.call('hincrby', batch, 'failed', -1)
    redis.call('hincrby', batch, 'n_' .. status, -1)
    local q = ns .. ':' .. queue
    redis.call('hset', q .. '.msgs', mid, data)
    redis.call('rpush', q, mid)
    added = added + 1
  end
end
if added > 0 then
  redis.call('hset', batch, 'status', 'in_progress')
  redis.call('hdel', batch, 'finished_at')
end
return added
"""
)

#: KEYS: batch. ARGV: now. Queued requests of a cancelling batch end `cancelled` unsent.
CANCEL = (
    _FINISH
    + """
local status = redis.call('hget', KEYS[1], 'status')
if not status then return false end
if status == 'in_progress' or status == 'validating' or status == 'finalizing' then
  redis.call('hset', KEYS[1], 'status', 'cancelling', 'cancelled_at', ARGV[1])
  finish_if_done(KEYS[1], ARGV[1])
end
return redis.call('hget', KEYS[1], 'status')
"""
)

#: KEYS: batch. ARGV: now. Called once the producer has submitted every line.
SEAL = (
    _FINISH
    + """
redis.call('hset', KEYS[1], 'sealed', '1')
finish_if_done(KEYS[1], ARGV[1])
return redis.call('hget', KEYS[1], 'status')
"""
)


def health_key(namespace: str, endpoint: str) -> str:
    """Hash of an endpoint's health: breaker state and per-second ok/fail buckets."""
    return f"{namespace}:health:{endpoint}"


def latency_key(namespace: str, endpoint: str) -> str:
    """Capped list of an endpoint's recent call latencies (ms), newest first."""
    return f"{namespace}:latency:{endpoint}"


def probe_key(namespace: str, endpoint: str) -> str:
    """Lease held by the one worker allowed to probe a half-open endpoint."""
    return f"{namespace}:probe:{endpoint}"


#: KEYS: health, latency, probe. ARGV: now_s, window_s, min_failures, failure_rate, open_s,
#: ok_count, fail_count, min_calls, latency samples...
#: Adds outcomes to per-second buckets, then moves the breaker:
#:   closed -> open when the window holds >= min_calls calls, >= min_failures failures,
#:   and failures are >= failure_rate of the calls;
#:   half_open -> closed on a success, -> open on a failure.
#: Returns {state, open_until}.
HEALTH_RECORD = """
local health, latency, probe = KEYS[1], KEYS[2], KEYS[3]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local min_failures, rate, open_s = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ok, fail = tonumber(ARGV[6]), tonumber(ARGV[7])
local tokens = tonumber(ARGV[9])
local sec = math.floor(now)
if ok > 0 then redis.call('hincrby', health, 'ok:' .. sec, ok) end
if fail > 0 then redis.call('hincrby', health, 'fail:' .. sec, fail) end
if tokens > 0 then redis.call('hincrby', health, 'tok:' .. sec, tokens) end
redis.call('hincrby', health, 'total_ok', ok)
redis.call('hincrby', health, 'total_fail', fail)
local min_calls = tonumber(ARGV[8])
for i = 10, #ARGV do redis.call('lpush', latency, ARGV[i]) end
if #ARGV >= 10 then redis.call('ltrim', latency, 0, 499) end
local state = redis.call('hget', health, 'state') or 'closed'
local open_until = tonumber(redis.call('hget', health, 'open_until') or '0')
local function open()
  state, open_until = 'open', now + open_s
  redis.call('hset', health, 'state', state, 'open_until', open_until, 'opened_at', now)
  redis.call('hincrby', health, 'opened', 1)
  redis.call('del', probe)
end
if state == 'half_open' then
  if fail > 0 then open() elseif ok > 0 then
    state = 'closed'
    redis.call('hset', health, 'state', state, 'open_until', 0)
    redis.call('del', probe)
  end
elseif state == 'closed' and fail > 0 then
  local oks, fails = 0, 0
  for s = sec - window + 1, sec do
    oks = oks + tonumber(redis.call('hget', health, 'ok:' .. s) or '0')
    fails = fails + tonumber(redis.call('hget', health, 'fail:' .. s) or '0')
  end
  local calls = oks + fails
  if calls >= min_calls and fails >= min_failures and fails >= rate * calls then open() end
end
-- forget buckets that left the window (a few per call is enough to keep the hash small)
local fields = redis.call('hkeys', health)
for _, f in ipairs(fields) do
  local s = tonumber(string.match(f, '^%a+:(%d+)$') or '')
  if s and s <= sec - window then redis.call('hdel', health, f) end
end
redis.call('expire', health, 86400)
redis.call('expire', latency, 86400)
return {state, tostring(open_until)}
"""

#: KEYS: health, probe. ARGV: now_s, probe_ttl_ms, worker_id.
#: Returns {decision, state, open_until}: decision is 'allow', 'probe' (this worker may send
#: one request to a half-open endpoint) or 'deny'.
HEALTH_ADMIT = """
local health, probe = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local state = redis.call('hget', health, 'state') or 'closed'
local open_until = tonumber(redis.call('hget', health, 'open_until') or '0')
if state == 'closed' then return {'allow', state, tostring(open_until)} end
if state == 'open' and now < open_until then return {'deny', state, tostring(open_until)} end
if redis.call('set', probe, ARGV[3], 'NX', 'PX', ARGV[2]) then
  redis.call('hset', health, 'state', 'half_open')
  return {'probe', 'half_open', tostring(open_until)}
end
return {'deny', 'half_open', tostring(open_until)}
"""


def limit_scope(namespace: str, endpoint: str, model: str | None = None) -> str:
    """Prefix of an endpoint's (or endpoint+model's) limiter keys: `<p>` hash of GCRA state,
    `<p>:leases` zset of concurrency leases, `<p>:pause` Retry-After pause."""
    base = f"{namespace}:rl:{endpoint}"
    return base if model is None else f"{base}:model:{model}"


_SCOPES = """
local function scopes(first)
  local out, i = {}, first
  while i <= #ARGV do
    out[#out + 1] = {p = ARGV[i], rpm = tonumber(ARGV[i + 1]), tpm = tonumber(ARGV[i + 2]),
                     conc = tonumber(ARGV[i + 3])}
    i = i + 4
  end
  return out
end
"""

#: ARGV: now_ms, lease_id, lease_ttl_ms, tokens, then per scope (prefix, rpm, tpm, conc).
#: GCRA per scope for requests and for tokens, with a burst of one second's worth and a
#: sustained rate of (limit - burst) per minute, so no 60 s window ever holds more than the
#: limit. Returns {1, 0} when admitted (state committed, lease taken) or {0, wait_ms}.
LIMIT_ADMIT = (
    _SCOPES
    + """
local now, lease, ttl, tokens = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local wait, commit = 0, {}
for _, s in ipairs(scopes(5)) do
  local pause = tonumber(redis.call('get', s.p .. ':pause') or '0')
  if pause > now then wait = math.max(wait, pause - now) end
  local st = redis.call('hmget', s.p, 'tat_r', 'tat_t', 'learned_rpm', 'learned_tpm')
  local rpm, tpm = s.rpm, s.tpm
  if st[3] and rpm > 0 then rpm = math.min(rpm, tonumber(st[3])) end
  if st[4] and tpm > 0 then tpm = math.min(tpm, tonumber(st[4])) end
  local c = {p = s.p}
  if rpm > 0 then
    local burst = math.max(1, math.floor(rpm / 60))
    local t = 60000 / math.max(rpm - burst, rpm * 0.5)
    local tat = math.max(tonumber(st[1] or '0'), now)
    local over = tat + t - now - burst * t
    if over > 1e-6 then wait = math.max(wait, over) else c.tat_r = tat + t end
  end
  if tpm > 0 then
    local burst = math.max(tokens, math.floor(tpm / 60))
    local t = 60000 / math.max(tpm - math.floor(tpm / 60), tpm * 0.5)
    local tat = math.max(tonumber(st[2] or '0'), now)
    local over = tat + tokens * t - now - burst * t
    if over > 1e-6 then wait = math.max(wait, over) else c.tat_t = tat + tokens * t end
  end
  if s.conc > 0 then
    redis.call('zremrangebyscore', s.p .. ':leases', '-inf', now)
    if redis.call('zcard', s.p .. ':leases') >= s.conc then
      local first = redis.call('zrange', s.p .. ':leases', 0, 0, 'WITHSCORES')
      wait = math.max(wait, math.min(50, tonumber(first[2]) - now))
    end
    c.conc = true
  end
  commit[#commit + 1] = c
end
if wait > 0 then return {0, tostring(math.ceil(wait))} end
for _, c in ipairs(commit) do
  if c.tat_r then redis.call('hset', c.p, 'tat_r', c.tat_r) end
  if c.tat_t then redis.call('hset', c.p, 'tat_t', c.tat_t) end
  if c.conc then
    redis.call('zadd', c.p .. ':leases', now + ttl, lease)
    redis.call('pexpire', c.p .. ':leases', ttl * 2)
  end
  redis.call('pexpire', c.p, 120000)
end
return {1, '0'}
"""
)

#: ARGV: now_ms, lease_id, token_delta, learned_rpm, learned_tpm, then scopes.
#: Gives the lease back and corrects the token bucket by (real - estimated) tokens; records
#: limits the provider announced (x-ratelimit-limit-*), which then cap the configured ones.
LIMIT_RELEASE = (
    _SCOPES
    + """
local now, lease, delta = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local learned_rpm, learned_tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
for _, s in ipairs(scopes(6)) do
  redis.call('zrem', s.p .. ':leases', lease)
  if s.tpm > 0 and delta ~= 0 then
    local t = 60000 / math.max(s.tpm - math.floor(s.tpm / 60), s.tpm * 0.5)
    local tat = tonumber(redis.call('hget', s.p, 'tat_t') or '0')
    redis.call('hset', s.p, 'tat_t', math.max(tat + delta * t, now - 60000))
  end
  if learned_rpm > 0 then redis.call('hset', s.p, 'learned_rpm', learned_rpm) end
  if learned_tpm > 0 then redis.call('hset', s.p, 'learned_tpm', learned_tpm) end
end
return 1
"""
)

#: KEYS: pause. ARGV: until_ms. Extends (never shortens) an endpoint's pause.
LIMIT_PAUSE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
local until_ms = tonumber(ARGV[1])
if until_ms > current then
  redis.call('set', KEYS[1], until_ms, 'PX', math.max(1, math.ceil(until_ms - ARGV[2])))
end
return 1
"""
