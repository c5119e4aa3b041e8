-- A run of admissions with the same keys, limits and gate in one batched call
-- (scripts.batched), decided together where nothing but concurrency leases limits them: no
-- configured rpm/tpm, no pause, no learned bucket, no first-answer gate. Each scope's state is
-- then read once for the run, not once per request, and each scope's new leases are added
-- with one ZADD (#22). The replies and what is written are those of the calls one by one,
-- except that expired leases are dropped once, as of the run's first call.
-- Anything else: nil, before anything is written (the calls then run one by one).
local function group_calls(keys, calls)
  KEYS, ARGV = keys, calls[1]
  local gate, n = ARGV[5], #ARGV
  for _, c in ipairs(calls) do
    if #c ~= n or c[5] ~= gate or not (tonumber(c[1]) and tonumber(c[3])) then return nil end
    for j = 6, n do
      if c[j] ~= ARGV[j] then return nil end
    end
  end
  local all = scopes(6)
  for _, s in ipairs(all) do
    if s.rpm ~= 0 or s.tpm ~= 0 or s.conc == nil then return nil end
  end
  if read_pause(all[1].pause) ~= nil then return nil end
  local gated = gate == '1'
  local f = read_state(all[#all].p, false, gated, true)
  if f[1] or f[5] or (gated and not f.nohdr) then return nil end
  local first_now = tonumber(ARGV[1])
  -- the scopes that hold leases: those with a max concurrency, and the last one when gated
  -- (adaptive concurrency, lib/aimd)
  local held = {}
  for i, s in ipairs(all) do
    local aimd = gated and i == #all
    if s.conc > 0 or aimd then
      held[#held + 1] = {s = s, live = leases_in_use(s.leases, first_now), add = {},
                         aimd = aimd and math.floor(tonumber(f.aimd or AIMD_START)) or nil}
    end
  end
  local out, ttl = {}, nil
  for j, c in ipairs(calls) do
    local now, wait = tonumber(c[1]), 0
    for _, h in ipairs(held) do
      if h.aimd and h.live >= h.aimd then wait = math.max(wait, 50) end
      if h.s.conc > 0 and h.live >= h.s.conc then
        if h.first == nil then  -- the lease that expires first, as the call would read it
          local e = redis.call('zrange', h.s.leases, 0, 0, 'WITHSCORES')
          h.first = tonumber(e[2]) or math.huge
          for k = 1, #h.add, 2 do h.first = math.min(h.first, h.add[k]) end
        end
        wait = math.max(wait, math.min(50, h.first - now))
      end
    end
    if wait > 0 then
      out[j] = {0, tostring(math.ceil(wait)), 0}
    else
      ttl = tonumber(c[3])
      for _, h in ipairs(held) do
        h.live = h.live + 1
        h.add[#h.add + 1] = now + ttl
        h.add[#h.add + 1] = c[2]
        if h.first ~= nil then h.first = math.min(h.first, now + ttl) end
      end
      out[j] = {1, '0', 0}
    end
  end
  if ttl == nil then return out end
  for _, h in ipairs(held) do
    for k = 1, #h.add, 1000 do
      redis.call('zadd', h.s.leases, unpack(h.add, k, math.min(k + 999, #h.add)))
    end
    expire_later(h.s.leases, ttl * 2)
  end
  for _, s in ipairs(all) do expire_later(s.p, 120000) end
  return out
end
