-- A run of admissions with the same keys, limits and gate in one batched call
-- (scripts.batched), decided together where nothing but concurrency leases limits them: no
-- configured rpm/tpm, no pause, no learned bucket, no first-answer gate. Each scope's state is
-- then read once for the run, not once per request, and each scope's new leases are added
-- with one ZADD (#22). The replies and what is written are those of the calls one by one,
-- except that expired leases are dropped once, as of the run's first call.
-- Anything else: nil, before anything is written (the calls then run one by one).

-- A call's words: now, lease id, ttl, then the tokens (not needed: no tpm) and the gate and
-- limits, which must be the run's first call's. One match per call, not a table of words.
local ADMIT_WORDS = '^(%S+) (%S*) (%S+) %S* (.*)$'
local ADMITTED = {1, '0', 0}

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
  if f[1] or f[5] or (gated and not f.nohdr) then return nil end
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
