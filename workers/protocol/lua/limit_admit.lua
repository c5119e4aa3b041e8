-- Per scope: the configured rpm/tpm caps as exact sliding windows (lib/window), so no 60 s
-- window ever holds more than the cap and a cap with room is used at once; a concurrency
-- lease; and the scope's Retry-After pause.
-- KEYS: (state, leases, pause, window) per scope.
-- ARGV: now_ms, lease_id, lease_ttl_ms, tokens, gate, then (rpm, tpm, conc) per scope.
-- gate = 1 (the provider may announce its limits): while the last scope has learned nothing
-- and has not seen an answer without limit headers, one request goes and the others wait
-- for its answer, so nobody overruns a bucket before the first answer describes it.
-- Returns {1, 0, probe} when admitted (state committed, lease taken; probe = 1 when this
-- request is the one that probes a scope whose pause has ended) or {0, wait_ms, 0}.
-- Learned buckets (lib/learned) are checked in every scope that has them.
-- include: scopes
-- include: pause
-- include: learned
-- include: aimd
-- include: window
local now, lease, ttl, tokens = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local gate = ARGV[5] == '1'
local wait, commit, probes = 0, {}, {}
local all = scopes(6)
for i, s in ipairs(all) do
  local pause = read_pause(s.pause)
  if pause ~= nil then
    if pause.until_ms > now then
      local left = pause.until_ms - now
      -- a probe is out: poll for its answer rather than sleep through its whole hold
      if pause.probing then left = math.min(left, 1000) end
      wait = math.max(wait, left)
    else
      probes[#probes + 1] = {key = s.pause, len = pause.len}
    end
  end
  local st = redis.call('hmget', s.p, 'learned_rpm', 'learned_tpm')
  local rpm, tpm = s.rpm, s.tpm
  if st[1] and rpm > 0 then rpm = math.min(rpm, tonumber(st[1])) end
  if st[2] and tpm > 0 then tpm = math.min(tpm, tonumber(st[2])) end
  local c = {p = s.p, leases = s.leases}
  if rpm > 0 or tpm > 0 then
    local n, sum = window_trim(s.log, s.p, now)
    local over = window_wait(s.log, n, sum, rpm, tpm, math.min(tokens, tpm), now)
    if over > 0 then wait = math.max(wait, over) else c.log, c.sum = s.log, sum end
  end
  local lr = redis.call('hmget', s.p, 'lr_lim', 'lr_rate', 'lr_lvl', 'lr_at')
  local level, lim, rate = learned_level(lr, now)
  if level ~= nil then
    if level >= 1 then c.lr = level - 1 else wait = math.max(wait, (1 - level) / rate) end
  end
  local lt = redis.call('hmget', s.p, 'lt_lim', 'lt_rate', 'lt_lvl', 'lt_at')
  level, lim, rate = learned_level(lt, now)
  if level ~= nil then
    local need = math.min(tokens, lim)
    if level >= need then c.lt = level - need else wait = math.max(wait, (need - level) / rate) end
  end
  if gate and i == #all and level == nil then
    local g = redis.call('hmget', s.p, 'lr_lim', 'nohdr', 'first_until', 'aimd')
    if not g[1] and not g[2] then
      if tonumber(g[3] or '0') > now then wait = math.max(wait, 50) else c.first = true end
    elseif g[2] then
      -- no limit headers: adaptive concurrency (lib/aimd), under max_concurrency
      local limit = math.floor(tonumber(g[4] or AIMD_START))
      redis.call('zremrangebyscore', s.leases, '-inf', now)
      if redis.call('zcard', s.leases) >= limit then wait = math.max(wait, 50) else c.conc = true end
    end
  end
  if s.conc > 0 then
    redis.call('zremrangebyscore', s.leases, '-inf', now)
    if redis.call('zcard', s.leases) >= s.conc then
      local first = redis.call('zrange', s.leases, 0, 0, 'WITHSCORES')
      wait = math.max(wait, math.min(50, tonumber(first[2]) - now))
    end
    c.conc = true
  end
  commit[#commit + 1] = c
end
if wait > 0 then return {0, tostring(math.ceil(wait)), 0} end
for _, p in ipairs(probes) do write_pause(p.key, now + p.len, p.len, true, now) end
for _, c in ipairs(commit) do
  if c.log then window_add(c.log, c.p, lease, ARGV[4], c.sum, now) end
  if c.first then redis.call('hset', c.p, 'first_until', now + ttl) end
  if c.lr then redis.call('hset', c.p, 'lr_lvl', c.lr, 'lr_at', now) end
  if c.lt then redis.call('hset', c.p, 'lt_lvl', c.lt, 'lt_at', now) end
  if c.conc then
    redis.call('zadd', c.leases, now + ttl, lease)
    redis.call('pexpire', c.leases, ttl * 2)
  end
  redis.call('pexpire', c.p, (c.lr or c.lt) and 3600000 or 120000)
end
return {1, '0', #probes > 0 and 1 or 0}
