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
local out, touched = {}, {}
while pos <= #blob do
  local b = 4 * tonumber(field())
  local key, status, data = field(), field(), field()
  local count, dead, cost = field(), field(), field()
  local usage = {field(), field(), field(), field()}
  local batch, done, stream, failed = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]
  if redis.call('hsetnx', done, key, '') == 0 then
    out[#out + 1] = 0
  else
    local sid = redis.call('xadd', stream, '*', 'k', key, 'r', data)
    redis.call('hset', done, key, sid)
    if status == 'succeeded' then
      redis.call('hincrby', batch, 'completed', 1)
    else
      redis.call('hincrby', batch, 'failed', 1)
      if dead ~= '' then
        redis.call('hset', failed, key, dead)
        redis.call('expire', failed, ttl)
      end
    end
    redis.call('hincrby', batch, 'n_' .. status, 1)
    if count == '1' then redis.call('hincrby', batch, 'total', 1) end
    if tonumber(cost) > 0 then redis.call('hincrbyfloat', batch, 'cost_usd', cost) end
    for i, name in ipairs(USAGE) do
      if usage[i] ~= '0' then redis.call('hincrby', batch, name, usage[i]) end
    end
    touched[b] = true
    out[#out + 1] = 1
  end
end
for b in pairs(touched) do
  finish_if_done(KEYS[b + 1], now)
  redis.call('expire', KEYS[b + 1], ttl)
  redis.call('expire', KEYS[b + 2], ttl)
  redis.call('expire', KEYS[b + 3], ttl)
end
return out
