-- A run of admissions with the same keys, limits and gate in one batched call
-- (scripts.batched), decided together where nothing but concurrency leases limits them: no
-- configured rpm/tpm, no pause, no learned bucket, no first-answer gate. Each scope's state is
-- then read once for the run, not once per request, and each scope's new leases are added
-- with one ZADD (#22). The replies and what is written are those of the calls one by one,
-- except that expired leases are dropped once, as of the run's first call. Where the
-- provider's buckets were learned instead: `learned_admits`.
-- Anything else: nil, before anything is written (the calls then run one by one).

-- A call's words: now, lease id, ttl, then the tokens (not needed: no tpm) and the gate and
-- limits, which must be the run's first call's. One match per call, not a table of words.
local ADMIT_WORDS = '^(%S+) (%S*) (%S+) %S* (.*)$'
local ADMITTED = {1, '0', 0}

-- A run of admissions (lib/admit_group) to a scope whose provider buckets were learned
-- (lib/learned) and nothing else limits: no configured rpm/tpm or max concurrency, no pause.
-- Each call takes a request and its tokens from the buckets, as it would alone: the levels
-- refill to its own now, and a call that does not fit is refused for the wait it would get.
-- The buckets are read once for the run and written once after it (the last admitted
-- call's levels), not read and written per call: an OpenAI or Anthropic endpoint sends its
-- limits with every answer, and its admissions ran one by one (#22). The replies and what is
-- written are those of the calls one by one. Anything else: nil, before anything is written.

-- A call's words: now, (lease id: no lease is taken), (ttl), tokens, then the gate and
-- limits, which must be the run's first call's.
local LEARNED_WORDS = '^(%S+) %S* %S+ (%S+) (.*)$'

local function learned_admits(all, f, calls, m, same)
  for _, s in ipairs(all) do
    if s.conc ~= 0 then return nil end
  end
  if not (f[1] and f[5]) then return nil end
  local nows, needs = {}, {}
  for j = 1, m do
    local now_s, tokens_s, rest = string.match(calls[j], LEARNED_WORDS)
    if rest ~= same then return nil end
    nows[j], needs[j] = tonumber(now_s), tonumber(tokens_s)
    if not (nows[j] and needs[j]) then return nil end
  end
  -- the buckets as the hash holds them, with the levels each admitted call leaves
  local b = {f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}
  local out, admitted = {}, false
  for j = 1, m do
    local now, wait = nows[j], 0
    local level_r, _, rate_r = learned_level(b, now, 0)
    if level_r < 1 then wait = math.max(wait, (1 - level_r) / rate_r) end
    local level_t, lim_t, rate_t = learned_level(b, now, 4)
    local need = math.min(needs[j], lim_t)
    if level_t < need then wait = math.max(wait, (need - level_t) / rate_t) end
    if wait > 0 then
      out[j] = {0, tostring(math.ceil(wait)), 0}
    else
      b[3], b[4], b[7], b[8] = level_r - 1, now, level_t - need, now
      out[j], admitted = ADMITTED, true
    end
  end
  if not admitted then return out end
  local last = all[#all]
  redis.call('hset', last.p, 'lr_lvl', b[3], 'lr_at', b[4], 'lt_lvl', b[7], 'lt_at', b[8])
  for _, s in ipairs(all) do expire_later(s.p, s == last and 3600000 or 120000) end
  return out
end

local function group_calls(keys, calls, m)
  local now_s, lease, ttl_s, same = string.match(calls[1], ADMIT_WORDS)
  if not same then return nil end
  KEYS, ARGV = keys, split(calls[1])
  local all = scopes(6)
  for _, s in ipairs(all) do
    if s.rpm ~= 0 or s.tpm ~= 0 or s.conc == nil then return nil end
  end
  local gate = ARGV[5]
  if read_pause(all[1].pause) ~= nil then return nil end
  local gated = gate == '1'
  local f = read_state(all[#all].p, false, gated, true)
  if f[1] or f[5] then return learned_admits(all, f, calls, m, same) end
  if gated and not f.nohdr then return nil end
  -- the calls' (now, lease, expiry), checked before anything is written
  local nows, ids, ends, ttls = {}, {}, {}, {}
  local last_now_s, last_ttl_s, now, ttl, e = nil, nil, nil, nil, nil
  for j = 1, m do
    local rest
    now_s, lease, ttl_s, rest = string.match(calls[j], ADMIT_WORDS)
    if rest ~= same then return nil end
    -- a turn's calls mostly share their ms and ttl: their expiry is worked out once
    if now_s ~= last_now_s or ttl_s ~= last_ttl_s then
      last_now_s, last_ttl_s, now, ttl = now_s, ttl_s, tonumber(now_s), tonumber(ttl_s)
      if not (now and ttl) then return nil end
      e = now + ttl
      -- a whole ms as its digits: Redis writes a number argument with %.17g, ~10x the cost
      if e % 1 == 0 and e < 2 ^ 53 then e = string.format('%d', e) end
    end
    nows[j], ids[j], ends[j], ttls[j] = now, lease, e, ttl
  end
  local first_now = nows[1]
  -- the scopes that hold leases: those with a max concurrency, and the last one when gated
  -- (adaptive concurrency, lib/aimd)
  local held = {}
  for i, s in ipairs(all) do
    local aimd = gated and i == #all
    if s.conc > 0 or aimd then
      held[#held + 1] = {s = s, live = leases_in_use(s.leases, first_now), add = {}, k = 0,
                         aimd = aimd and math.floor(tonumber(f.aimd or AIMD_START)) or nil}
    end
  end
  -- (numeric loops per call: an ipairs step is a C call, ~4 of them per admission)
  local out, last, n_held = {}, nil, #held
  for j = 1, m do
    local now, wait = nows[j], 0
    for i = 1, n_held do
      local h = held[i]
      if h.aimd and h.live >= h.aimd then wait = math.max(wait, 50) end
      if h.s.conc > 0 and h.live >= h.s.conc then
        if h.first == nil then  -- the lease that expires first, as the call would read it
          local e = redis.call('zrange', h.s.leases, 0, 0, 'WITHSCORES')
          h.first = tonumber(e[2]) or math.huge
          for k = 1, h.k, 2 do h.first = math.min(h.first, tonumber(h.add[k])) end
        end
        wait = math.max(wait, math.min(50, h.first - now))
      end
    end
    if wait > 0 then
      out[j] = {0, tostring(math.ceil(wait)), 0}
    else
      last = j
      local e = ends[j]
      for i = 1, n_held do
        local h = held[i]
        h.live = h.live + 1
        h.add[h.k + 1], h.add[h.k + 2], h.k = e, ids[j], h.k + 2
        if h.first ~= nil then h.first = math.min(h.first, tonumber(e)) end
      end
      out[j] = ADMITTED
    end
  end
  if last == nil then return out end
  for _, h in ipairs(held) do
    for k = 1, h.k, 1000 do
      redis.call('zadd', h.s.leases, unpack(h.add, k, math.min(k + 999, h.k)))
    end
    expire_later(h.s.leases, ttls[last] * 2)
  end
  for _, s in ipairs(all) do expire_later(s.p, 120000) end
  return out
end
