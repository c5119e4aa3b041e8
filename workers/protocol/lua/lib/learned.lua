-- The provider's own buckets as its answers describe them (x-ratelimit-*, anthropic-ratelimit-*),
-- kept in a scope's state hash: per bucket (prefix 'lr_' requests, 'lt_' tokens) its limit,
-- refill rate (units per ms), level and the ms the level was computed at. Between answers the
-- level refills at the rate; every answer sets it again from what the provider said is left.

-- The bucket's level now, or nil when nothing was learned: its (limit, rate, level, at)
-- fields are f[i + 1] .. f[i + 4] (i = 0 for a bucket's own HMGET).
local function learned_level(f, now, i)
  i = i or 0
  if not f[i + 1] then return nil end
  local lim, rate = tonumber(f[i + 1]), tonumber(f[i + 2])
  local lvl, at = tonumber(f[i + 3]), tonumber(f[i + 4])
  return math.min(lim, lvl + math.max(0, now - at) * rate), lim, rate
end

-- Folds one answer's (limit, remaining, reset_ms) into a bucket. The rate is what the reset
-- says ((limit - remaining) units come back in reset_ms), else limit per minute. What the
-- provider says is left wins when it is less than we thought (other clients, our estimates).
local function learn(p, prefix, lim, rem, reset, now)
  if lim <= 0 or rem < 0 then return end
  local f = redis.call('hmget', p, prefix .. 'lim', prefix .. 'rate', prefix .. 'lvl', prefix .. 'at')
  local rate = tonumber(f[2])
  if f[1] and tonumber(f[1]) ~= lim then rate = nil end
  local deficit = lim - rem
  if reset > 0 and deficit >= math.max(2, lim * 0.02) then
    rate = (deficit - 0.5) / reset
  end
  rate = rate or lim / 60000
  -- `remaining` is a whole number: a level in [rem, rem + 1) agrees with it.
  local level = math.min(rem, lim)
  local cur = learned_level(f, now)
  -- An answer that says more is left than we counted is older than our latest admissions
  -- (answers overtake each other): the refill, refunds and usage corrections raise the level.
  if cur ~= nil and cur < level + 1 then level = cur end
  redis.call('hset', p, prefix .. 'lim', lim, prefix .. 'rate', rate, prefix .. 'lvl', level,
             prefix .. 'at', now)
end

-- Adds `amount` (negative: takes) to a learned bucket, if there is one.
local function learned_add(p, prefix, amount, now)
  if amount == 0 then return end
  local f = redis.call('hmget', p, prefix .. 'lim', prefix .. 'rate', prefix .. 'lvl', prefix .. 'at')
  local cur, lim = learned_level(f, now)
  if cur == nil then return end
  redis.call('hset', p, prefix .. 'lvl', math.min(lim, cur + amount), prefix .. 'at', now)
end
