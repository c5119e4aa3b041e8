-- A run of releases with the same keys and limits in one batched call (scripts.batched),
-- done together where they only give leases back and feed adaptive concurrency (lib/aimd): no
-- limit headers or announced limits in the answers, no configured tpm, no pause, no learned
-- bucket, and the first answer had no limit headers. The model scope's state is then read
-- and written once for the run, and each scope's leases go with one ZREM (#22); what is
-- written is what the calls one by one write. Answers with limit headers: `learned_releases`
-- (lib/release_learned). Anything else: nil, before anything is written (the calls then run
-- one by one).

-- A call's words: now, lease id, (token delta), the announced limits, answered, (refunded,
-- estimate: no bucket or window to correct here), the six header words, admitted_ms, then
-- the limits. The announced limits, headers and limits must be the run's first call's. One
-- match per call, not a table of words; now and admitted_ms as positions, read only where
-- a refusal needs them.
local RELEASE_WORDS =
  '^()%S+ (%S*) %S+ (%S+ %S+ )(%S+) %S+ %S+ (%S+ %S+ %S+ %S+ %S+ %S+ )()%S+ (.*)$'

-- The number in `words` from position `at` to the next space.
local function number_at(words, at)
  return tonumber(string.sub(words, at, string.find(words, ' ', at, true) - 1))
end

local function group_calls(keys, calls, m)
  local _, _, news, _, heard, _, same = string.match(calls[1], RELEASE_WORDS)
  if not same then return nil end
  KEYS, ARGV = keys, split(calls[1])
  local r_lim, t_lim = tonumber(ARGV[9]), tonumber(ARGV[12])
  if r_lim and t_lim and (r_lim > 0 or t_lim > 0) then
    return learned_releases(scopes(16), calls, m, news, same)
  end
  for _, j in ipairs({4, 5, 9, 12}) do
    local v = tonumber(ARGV[j])
    if v == nil or v > 0 then return nil end
  end
  -- the calls' leases and answers; a refusal's times (it may cut), checked before writing
  local leases, oks, nows, admitted, answered = {}, {}, {}, {}, false
  for j = 1, m do
    local words = calls[j]
    local now_at, lease, news_j, ok, heard_j, at, same_j = string.match(words, RELEASE_WORDS)
    if same_j ~= same or news_j ~= news or heard_j ~= heard then return nil end
    leases[j], oks[j] = lease, ok == '1'
    if oks[j] then
      answered = true
    else
      nows[j], admitted[j] = number_at(words, now_at), number_at(words, at)
      if not (nows[j] and admitted[j]) then return nil end
    end
  end
  local all = scopes(16)
  for _, s in ipairs(all) do
    if s.tpm ~= 0 or s.conc == nil then return nil end
  end
  local last = all[#all]
  local g = redis.call('hmget', last.p, 'nohdr', 'aimd', 'aimd_cut_at', 'lr_lim', 'lt_lim')
  if not g[1] or g[4] or g[5] then return nil end
  if answered and redis.call('get', all[1].pause) then return nil end
  for i, s in ipairs(all) do
    if s.conc > 0 or i == #all then
      for k = 1, m, 1000 do
        redis.call('zrem', s.leases, unpack(leases, k, math.min(k + 999, m)))
      end
    end
  end
  local cap = aimd_cap(all)
  local lim, cut_at, set, cut = tonumber(g[2] or AIMD_START), g[3], false, false
  local out = {}
  for j = 1, m do
    out[j] = 1
    local l, at = aimd_next(oks[j], cap, nows[j], admitted[j], lim, cut_at)
    if l ~= nil then
      lim, set = l, true
      if at ~= nil then cut_at, cut = at, true end
    end
  end
  if cut then redis.call('hset', last.p, 'aimd_cut_at', cut_at) end
  if set then redis.call('hset', last.p, 'aimd', lim) end
  return out
end
