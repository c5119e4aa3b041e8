-- Adaptive concurrency's slots held by one worker process (its share), which it then admits
-- its requests into itself, without a script call per request (workers.share, #22).
-- KEYS: (state, leases, pause, window) per scope, as limit_admit.lua.
-- ARGV: now_ms, holder (the process's lease id prefix), want (the slots it would use: its
--       calls in flight and those waiting), keep (its calls in flight: their leases stay,
--       whatever is granted), held (the leases it held after its last call), ttl_ms, oks
--       (answers without a refusal since its last call), refused (the admitted_ms of each
--       refusal since then, comma-separated, or '-'), then (rpm, tpm, conc) per scope.
-- The share is leases in the last scope's set, `holder#1` .. `holder#n`, which every
-- admission counts as it counts one request's lease, refreshed by each call: a process that
-- dies leaves them to expire with the ttl. The answers first feed adaptive concurrency as
-- their releases one by one would (lib/aimd). A share is granted only where the scope is
-- plain adaptive concurrency: no configured rpm, tpm or concurrency, nothing learned from
-- limit headers, no pause, and the first answer had no limit headers; and only where the
-- limit has room for what every process holding one wants: then it is all this one wants.
-- Returns {granted, limit, plain}: plain 0 where the scope is not plain adaptive concurrency
-- (no share is granted: the process admits each request through limit_admit.lua).
-- include: expire
-- include: scopes
-- include: aimd
-- include: leases

-- How long a holder's want counts after its last call (it calls every 50 ms while it holds
-- a share): a process that died stops counting soon, though its leases last their ttl.
local HOLDER_TTL_MS = 5000

local now, holder = tonumber(ARGV[1]), ARGV[2]
local want, keep, held = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, oks, refused = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local all = scopes(9)
local last = all[#all]
local plain = true
for _, s in ipairs(all) do
  if s.rpm ~= 0 or s.tpm ~= 0 or s.conc ~= 0 then plain = false end
end
local g = redis.call('hmget', last.p, 'nohdr', 'aimd', 'aimd_cut_at', 'lr_lim', 'lt_lim')
local limit = tonumber(g[2] or AIMD_START)
if g[1] and (oks > 0 or refused ~= '-') then
  local cap = aimd_cap(all)
  local cut_at, set, cut = g[3], false, false
  if not cut_at then  -- slow start: +1 per answer (aimd_next), in one step
    limit, set = math.min(cap, limit + oks), oks > 0
  else
    for _ = 1, oks do
      limit, set = aimd_next(true, cap, now, 0, limit, cut_at), true
    end
  end
  for at in string.gmatch(refused, '[^,]+') do
    if at ~= '-' then
      local l, c = aimd_next(false, cap, now, tonumber(at), limit, cut_at)
      if l ~= nil then limit, set = l, true end
      if c ~= nil then cut_at, cut = c, true end
    end
  end
  if cut then redis.call('hset', last.p, 'aimd_cut_at', cut_at) end
  if set then redis.call('hset', last.p, 'aimd', limit) end
end
plain = plain and g[1] and not g[4] and not g[5] and redis.call('exists', all[1].pause) == 0
local live = leases_in_use(last.leases, now)
local mine, names = 0, {}
for i = 1, held do names[i] = holder .. '#' .. i end
for i = 1, held, 1000 do
  local scores = redis.call('zmscore', last.leases, unpack(names, i, math.min(i + 999, held)))
  for j = 1, #scores do
    if scores[j] then mine = mine + 1 end
  end
end
local field = 'h:' .. holder
local granted = 0
if plain and want > 0 then
  -- Only where there is room for what every process holding a share wants (state fields
  -- 'h:<holder>' = "<expiry> <want>"), and for all this one wants beside the leases out now:
  -- where the processes want more than the limit, each request is admitted by itself as it
  -- comes (limit_admit.lua), which keeps every slot in use and sees a cut at once, so no
  -- process holds slots another is waiting for (#22: shares cut to fair parts left ~12 % of
  -- a saturated server's slots unused, and answered each cut up to a renewal late).
  local fields, total = redis.call('hgetall', last.p), want
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 2) == 'h:' and f ~= field then
      local expiry, w = string.match(fields[i + 1], '^(%S+) (%S+)$')
      if expiry and tonumber(expiry) > now then
        total = total + tonumber(w)
      else
        redis.call('hdel', last.p, f)
      end
    end
  end
  local whole = math.floor(limit)
  if total <= whole and want <= whole - (live - mine) then granted = want end
end
local members = math.max(granted, keep)
if members > 0 then
  local until_ms = now + ttl
  for i = 1, members, 500 do
    local args = {}
    for j = i, math.min(i + 499, members) do
      args[#args + 1] = until_ms
      args[#args + 1] = holder .. '#' .. j
    end
    redis.call('zadd', last.leases, unpack(args))
  end
  redis.call('hset', last.p, field, (now + HOLDER_TTL_MS) .. ' ' .. want)
  expire_later(last.leases, ttl * 2)
  expire_later(last.p, 120000)
else
  redis.call('hdel', last.p, field)
end
if held > members then
  for i = members + 1, held, 1000 do
    redis.call('zrem', last.leases, unpack(names, i, math.min(i + 999, held)))
  end
end
expire_noted()
return {granted, math.floor(limit), plain and 1 or 0}
