-- Stores each result only if none exists for its (batch, key): a redelivered message cannot
-- create a second one. Many results per call, of any number of batches: workers coalesce.
-- KEYS: per batch of the call, (batch, done, results stream, failed).
-- ARGV: ttl_s, now, blob of (batch index, key, status, result, count_in_total, dead, cost,
--       input, output, cached and reasoning tokens),
--       each field followed by SEP. `dead` (may be empty) is a failed request's dead letter.
-- Returns one 1 (stored) or 0 (duplicate) per result.
-- include: finish
-- include: field
local ttl, now = tonumber(ARGV[1]), ARGV[2]
-- The batch's token totals, for the `usage` of its OpenAI batch object.
local USAGE = {'input_tokens', 'output_tokens', 'cached_tokens', 'reasoning_tokens'}
blob, pos = ARGV[3], 1
-- Per batch of the call, what its hash's counters gain (field -> amount): added once per
-- call, not once per result (a call carries hundreds; the script is atomic either way).
local out, gains = {}, {}
local function gain(g, name, amount)
  g[name] = (g[name] or 0) + amount
end
while pos <= #blob do
  local b = 4 * tonumber(field())
  local key, status, data = field(), field(), field()
  local count, dead, cost = field(), field(), field()
  local usage = {field(), field(), field(), field()}
  local done, stream, failed = KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]
  if redis.call('hsetnx', done, key, '') == 0 then
    out[#out + 1] = 0
  else
    local sid = redis.call('xadd', stream, '*', 'k', key, 'r', data)
    redis.call('hset', done, key, sid)
    local g = gains[b]
    if g == nil then
      g = {}
      gains[b] = g
    end
    if status == 'succeeded' then
      gain(g, 'completed', 1)
    else
      gain(g, 'failed', 1)
      if dead ~= '' then
        redis.call('hset', failed, key, dead)
        redis.call('expire', failed, ttl)
      end
    end
    gain(g, 'n_' .. status, 1)
    if count == '1' then gain(g, 'total', 1) end
    -- Each cost as sent, in order: HINCRBYFLOAT's own sum, as when added one by one.
    if tonumber(cost) > 0 then redis.call('hincrbyfloat', KEYS[b + 1], 'cost_usd', cost) end
    for i, name in ipairs(USAGE) do
      if usage[i] ~= '0' then gain(g, name, tonumber(usage[i])) end
    end
    out[#out + 1] = 1
  end
end
for b, g in pairs(gains) do
  local batch = KEYS[b + 1]
  for name, amount in pairs(g) do redis.call('hincrby', batch, name, amount) end
  finish_if_done(batch, now)
  redis.call('expire', batch, ttl)
  redis.call('expire', KEYS[b + 2], ttl)
  redis.call('expire', KEYS[b + 3], ttl)
end
return out
