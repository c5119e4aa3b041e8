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

-- Folds one answer's (limit, remaining, reset_ms) into a bucket whose fields as read are f[i
-- + 1] .. f[i + 4], adding the fields to write to `out`. The rate is what the reset says
-- ((limit - remaining) units come back in reset_ms), else limit per minute. What the provider
-- says is left wins when it is less than we thought (other clients, our estimates).
local function fold(f, i, prefix, lim, rem, reset, now, out)
  if lim <= 0 or rem < 0 then return end
  local rate = tonumber(f[i + 2])
  if f[i + 1] and tonumber(f[i + 1]) ~= lim then rate = nil end
  local deficit = lim - rem
  if reset > 0 and deficit >= math.max(2, lim * 0.02) then
    rate = (deficit - 0.5) / reset
  end
  rate = rate or lim / 60000
  -- `remaining` is a whole number: a level in [rem, rem + 1) agrees with it.
  local level = math.min(rem, lim)
  local cur = learned_level(f, now, i)
  -- An answer that says more is left than we counted is older than our latest admissions
  -- (answers overtake each other): the refill, refunds and usage corrections raise the level.
  if cur ~= nil and cur < level + 1 then level = cur end
  for _, v in ipairs({prefix .. 'lim', lim, prefix .. 'rate', rate, prefix .. 'lvl', level,
                      prefix .. 'at', now}) do
    out[#out + 1] = v
  end
end

-- Learns what one answer said of both buckets (r: requests, t: tokens; limit, remaining,
-- reset ms each, -1 unknown): one HMGET and one HSET for the two.
local function learn(p, r_lim, r_rem, r_reset, t_lim, t_rem, t_reset, now)
  if (r_lim <= 0 or r_rem < 0) and (t_lim <= 0 or t_rem < 0) then return end
  local f = redis.call('hmget', p, 'lr_lim', 'lr_rate', 'lr_lvl', 'lr_at',
                       'lt_lim', 'lt_rate', 'lt_lvl', 'lt_at')
  local out = {}
  fold(f, 0, 'lr_', r_lim, r_rem, r_reset, now, out)
  fold(f, 4, 'lt_', t_lim, t_rem, t_reset, now, out)
  redis.call('hset', p, unpack(out))
end

-- Adds `amount` (negative: takes) to a learned bucket, if there is one.
local function learned_add(p, prefix, amount, now)
  if amount == 0 then return end
  local f = redis.call('hmget', p, prefix .. 'lim', prefix .. 'rate', prefix .. 'lvl', prefix .. 'at')
  local cur, lim = learned_level(f, now)
  if cur == nil then return end
  redis.call('hset', p, prefix .. 'lvl', math.min(lim, cur + amount), prefix .. 'at', now)
end

-- Records the request and token limits an answer's headers announced (0: not announced) in a
-- scope's state hash `p`, where the admits read them.
local function note_learned(p, rpm, tpm)
  if rpm > 0 and tpm > 0 then
    redis.call('hset', p, 'learned_rpm', rpm, 'learned_tpm', tpm)
  elseif rpm > 0 then
    redis.call('hset', p, 'learned_rpm', rpm)
  elseif tpm > 0 then
    redis.call('hset', p, 'learned_tpm', tpm)
  end
end
