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
-- Only the first scope (the endpoint's) has a pause: limit_pause.lua sets no other. Only the
-- last has learned buckets (lib/learned): limit_release.lua learns into no other.
-- include: expire
-- include: scopes
-- include: pause
-- include: learned
-- include: aimd
-- include: window
-- include: state
-- include: leases
-- include: admit_group

local now, lease, ttl, tokens = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local gate = ARGV[5] == '1'
local wait, commit, probes = 0, {}, {}
local all = scopes(6)
for i, s in ipairs(all) do
  local pause = i == 1 and read_pause(s.pause) or nil
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
  -- The state hash, read once: the learned buckets, then what a configured cap (its
  -- window's token sum) and the first-answer gate need.
  local capped, gated = s.rpm > 0 or s.tpm > 0, gate and i == #all
  local f = read_state(s.p, capped, gated, i == #all)
  local rpm, tpm = s.rpm, s.tpm
  local c = {p = s.p, leases = s.leases}
  if capped then
    if f.learned_rpm and rpm > 0 then rpm = math.min(rpm, tonumber(f.learned_rpm)) end
    if f.learned_tpm and tpm > 0 then tpm = math.min(tpm, tonumber(f.learned_tpm)) end
    local n, sum = window_trim(s.log, s.p, now, f.win_t)
    local over = window_wait(s.log, n, sum, rpm, tpm, math.min(tokens, tpm), now)
    if over > 0 then wait = math.max(wait, over) else c.log, c.sum = s.log, sum end
  end
  local level, lim, rate = learned_level(f, now, 0)
  if level ~= nil then
    if level >= 1 then c.lr = level - 1 else wait = math.max(wait, (1 - level) / rate) end
  end
  level, lim, rate = learned_level(f, now, 4)
  if level ~= nil then
    local need = math.min(tokens, lim)
    if level >= need then c.lt = level - need else wait = math.max(wait, (need - level) / rate) end
  end
  -- concurrency leases in use (expired ones dropped first), counted once per scope
  local live = nil
  if gated and level == nil then
    if not f[1] and not f.nohdr then
      if tonumber(f.first_until or '0') > now then wait = math.max(wait, 50) else c.first = true end
    elseif f.nohdr then
      -- no limit headers: adaptive concurrency (lib/aimd), under max_concurrency
      local limit = math.floor(tonumber(f.aimd or AIMD_START))
      live = leases_in_use(s.leases, now)
      if live >= limit then wait = math.max(wait, 50) else c.conc = true end
    end
  end
  if s.conc > 0 then
    live = live or leases_in_use(s.leases, now)
    if live >= s.conc then
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
  if c.lr and c.lt then
    redis.call('hset', c.p, 'lr_lvl', c.lr, 'lr_at', now, 'lt_lvl', c.lt, 'lt_at', now)
  elseif c.lr then
    redis.call('hset', c.p, 'lr_lvl', c.lr, 'lr_at', now)
  elseif c.lt then
    redis.call('hset', c.p, 'lt_lvl', c.lt, 'lt_at', now)
  end
  if c.conc then
    redis.call('zadd', c.leases, now + ttl, lease)
    expire_later(c.leases, ttl * 2)
  end
  expire_later(c.p, (c.lr or c.lt) and 3600000 or 120000)
end
expire_noted()
return {1, '0', #probes > 0 and 1 or 0}
