-- A run of releases with the same keys and limits in one batched call (scripts.batched),
-- done together where they only give leases back and feed adaptive concurrency (lib/aimd): no
-- limit headers or announced limits in the answers, no configured tpm, no pause, no learned
-- bucket, and the first answer had no limit headers. The model scope's state is then read
-- and written once for the run, and each scope's leases go with one ZREM (#22); what is
-- written is what the calls one by one write. Anything else: nil, before anything is
-- written (the calls then run one by one).
local function group_calls(keys, calls)
  KEYS, ARGV = keys, calls[1]
  local n, answered = #ARGV, false
  for _, c in ipairs(calls) do
    if #c ~= n then return nil end
    for j = 16, n do
      if c[j] ~= ARGV[j] then return nil end
    end
    for _, j in ipairs({4, 5, 9, 12}) do
      local v = tonumber(c[j])
      if v == nil or v > 0 then return nil end
    end
    if not (tonumber(c[1]) and tonumber(c[15])) then return nil end
    answered = answered or c[6] == '1'
  end
  local all = scopes(16)
  for _, s in ipairs(all) do
    if s.tpm ~= 0 or s.conc == nil then return nil end
  end
  local last = all[#all]
  local g = redis.call('hmget', last.p, 'nohdr', 'aimd', 'aimd_cut_at', 'lr_lim', 'lt_lim')
  if not g[1] or g[4] or g[5] then return nil end
  if answered and redis.call('get', all[1].pause) then return nil end
  local leases, out = {}, {}
  for j, c in ipairs(calls) do
    leases[j] = c[2]
    out[j] = 1
  end
  for i, s in ipairs(all) do
    if s.conc > 0 or i == #all then
      for k = 1, #leases, 1000 do
        redis.call('zrem', s.leases, unpack(leases, k, math.min(k + 999, #leases)))
      end
    end
  end
  local cap = all[1].conc > 0 and all[1].conc or 1024
  if last.conc > 0 then cap = math.min(cap, last.conc) end
  local lim, cut_at, set, cut = g[2], g[3], false, false
  for _, c in ipairs(calls) do
    local l, at = aimd_next(c[6] == '1', cap, tonumber(c[1]), tonumber(c[15]), lim, cut_at)
    if l ~= nil then
      lim, set = l, true
      if at ~= nil then cut_at, cut = at, true end
    end
  end
  if cut then redis.call('hset', last.p, 'aimd_cut_at', cut_at) end
  if set then redis.call('hset', last.p, 'aimd', lim) end
  return out
end
