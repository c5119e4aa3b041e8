-- Adds call outcomes to an endpoint's per-second buckets, then moves its breaker:
--   closed -> open when the window holds >= min_calls calls, >= min_failures failures,
--   and failures are >= failure_rate of the calls;
--   half_open -> closed on a success, -> open on a failure.
-- KEYS: health, latency, probe.
-- ARGV: now_s, window_s, min_failures, failure_rate, open_s, ok_count, fail_count, min_calls,
--       tokens, latency samples...
-- Returns {state, open_until}.
local health, latency, probe = KEYS[1], KEYS[2], KEYS[3]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local min_failures, rate, open_s = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ok, fail = tonumber(ARGV[6]), tonumber(ARGV[7])
local tokens = tonumber(ARGV[9])
local sec = math.floor(now)
if ok > 0 then redis.call('hincrby', health, 'ok:' .. sec, ok) end
if fail > 0 then redis.call('hincrby', health, 'fail:' .. sec, fail) end
if tokens > 0 then redis.call('hincrby', health, 'tok:' .. sec, tokens) end
redis.call('hincrby', health, 'total_ok', ok)
redis.call('hincrby', health, 'total_fail', fail)
local min_calls = tonumber(ARGV[8])
for i = 10, #ARGV do redis.call('lpush', latency, ARGV[i]) end
if #ARGV >= 10 then redis.call('ltrim', latency, 0, 499) end
local state = redis.call('hget', health, 'state') or 'closed'
local open_until = tonumber(redis.call('hget', health, 'open_until') or '0')
local function open()
  state, open_until = 'open', now + open_s
  redis.call('hset', health, 'state', state, 'open_until', open_until, 'opened_at', now)
  redis.call('hincrby', health, 'opened', 1)
  redis.call('del', probe)
end
if state == 'half_open' then
  if fail > 0 then open() elseif ok > 0 then
    state = 'closed'
    redis.call('hset', health, 'state', state, 'open_until', 0)
    redis.call('del', probe)
  end
elseif state == 'closed' and fail > 0 then
  local oks, fails = 0, 0
  for s = sec - window + 1, sec do
    oks = oks + tonumber(redis.call('hget', health, 'ok:' .. s) or '0')
    fails = fails + tonumber(redis.call('hget', health, 'fail:' .. s) or '0')
  end
  local calls = oks + fails
  if calls >= min_calls and fails >= min_failures and fails >= rate * calls then open() end
end
-- forget buckets that left the window (a few per call is enough to keep the hash small)
local fields = redis.call('hkeys', health)
for _, f in ipairs(fields) do
  local s = tonumber(string.match(f, '^%a+:(%d+)$') or '')
  if s and s <= sec - window then redis.call('hdel', health, f) end
end
redis.call('expire', health, 86400)
redis.call('expire', latency, 86400)
return {state, tostring(open_until)}
