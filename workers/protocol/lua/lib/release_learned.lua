-- A run of releases (lib/release_group) into a scope whose answers carry the provider's
-- limit headers (OpenAI's x-ratelimit-*, Anthropic's anthropic-ratelimit-*), where nothing
-- else needs a call of its own: no configured tpm (its window), no pause. Each call gives
-- its lease back, corrects the token bucket by its real usage (or refunds a refusal) and
-- folds its answer's headers into the buckets (lib/learned), in order, on the buckets as
-- read once for the run; they are written once after it, with each scope's announced
-- limits, instead of two HMGETs and two HSETs per call (#22). What is written is what the
-- calls one by one write. Anything else: nil, before anything is written.

-- A call's words: now, lease id, token delta, the announced limits (the run's first
-- call's), answered, refunded, estimate, the six header words, (admitted_ms), then the
-- limits (the run's first call's).
local LEARNED_RELEASE_WORDS = '^(%S+) (%S*) (%S+) (%S+ %S+ )%S+ (%S+) (%S+) '
  .. '(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) %S+ (.*)$'
-- The buckets' fields in the order lib/learned reads them (f[1] .. f[8]).
local BUCKET_INDEX = {lr_lim = 1, lr_rate = 2, lr_lvl = 3, lr_at = 4,
                      lt_lim = 5, lt_rate = 6, lt_lvl = 7, lt_at = 8}

-- lib/learned's learned_add, on the fields `b` as read: adds `amount` to the bucket whose
-- fields start after index `i`.
local function bucket_add(b, i, amount, now)
  if amount == 0 then return end
  local cur, lim = learned_level(b, now, i)
  if cur == nil then return end
  b[i + 3], b[i + 4] = math.min(lim, cur + amount), now
end

local function learned_releases(all, calls, m, news, same)
  for _, s in ipairs(all) do
    if s.tpm ~= 0 or s.conc == nil then return nil end
  end
  local last = all[#all]
  -- the calls' words, checked before anything is written
  local leases, calls_n = {}, {}
  for j = 1, m do
    local now, lease, delta, news_j, refunded, estimate, r_lim, r_rem, r_reset, t_lim, t_rem,
          t_reset, same_j = string.match(calls[j], LEARNED_RELEASE_WORDS)
    if news_j ~= news or same_j ~= same then return nil end
    local c = {tonumber(now), tonumber(delta), tonumber(estimate), tonumber(r_lim),
               tonumber(r_rem), tonumber(r_reset), tonumber(t_lim), tonumber(t_rem),
               tonumber(t_reset), refunded == '1'}
    for k = 1, 9 do
      if c[k] == nil then return nil end
    end
    if not (c[4] > 0 or c[7] > 0) then return nil end  -- headerless: adaptive concurrency
    leases[j], calls_n[j] = lease, c
  end
  if redis.call('get', all[1].pause) then return nil end
  local b = redis.call('hmget', last.p, 'lr_lim', 'lr_rate', 'lr_lvl', 'lr_at',
                       'lt_lim', 'lt_rate', 'lt_lvl', 'lt_at')
  for j = 1, m do
    local c = calls_n[j]
    local now = c[1]
    if c[10] then  -- refunded
      bucket_add(b, 0, 1, now)
      bucket_add(b, 4, c[3], now)
    else
      bucket_add(b, 4, -c[2], now)
    end
    local out = {}
    fold(b, 0, 'lr_', c[4], c[5], c[6], now, out)
    fold(b, 4, 'lt_', c[7], c[8], c[9], now, out)
    for k = 1, #out, 2 do b[BUCKET_INDEX[out[k]]] = out[k + 1] end
  end
  for _, s in ipairs(all) do
    if s.conc > 0 or s == last then
      for k = 1, m, 1000 do
        redis.call('zrem', s.leases, unpack(leases, k, math.min(k + 999, m)))
      end
    end
  end
  local fields = {}
  for name, k in pairs(BUCKET_INDEX) do
    if b[k] then fields[#fields + 1], fields[#fields + 2] = name, b[k] end
  end
  if #fields > 0 then redis.call('hset', last.p, unpack(fields)) end
  redis.call('hdel', last.p, 'first_until')
  expire_later(last.p, 3600000)
  local learned_rpm, learned_tpm = string.match(news, '^(%S+) (%S+) $')
  learned_rpm, learned_tpm = tonumber(learned_rpm), tonumber(learned_tpm)
  for _, s in ipairs(all) do note_learned(s.p, learned_rpm, learned_tpm) end
  local out = {}
  for j = 1, m do out[j] = 1 end
  return out
end
