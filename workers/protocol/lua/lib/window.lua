-- A configured rpm/tpm cap as an exact sliding window: per scope a zset of the admissions of
-- the last WINDOW_MS (member "<lease> <tokens>", score the admission ms) and, in the scope's
-- state hash, 'win_t', the sum of their tokens. No window of WINDOW_MS ever holds more than
-- the cap, and a cap the window has room for is usable at once (no smoothed pace). WINDOW_MS
-- is 60 s plus 1 s for the time between admission and arrival at the provider, so the
-- provider's clock never sees two admissions 60 s apart closer together.
local WINDOW_MS = 61000
-- Oldest entries a token wait looks at (a shorter wait than the exact one is only a retry).
local WINDOW_SCAN = 64

-- Drops the admissions older than the window; (requests, tokens) left in it. `win_t` is the
-- state hash's token sum as read (lib/state).
local function window_trim(log, p, now, win_t)
  local cut = now - WINDOW_MS
  local sum = tonumber(win_t or '0')
  local old = redis.call('zrangebyscore', log, '-inf', cut)
  if #old > 0 then
    for _, m in ipairs(old) do sum = sum - (tonumber(string.match(m, ' (%S+)$')) or 0) end
    redis.call('zremrangebyscore', log, '-inf', cut)
  end
  local n = redis.call('zcard', log)
  if n == 0 then sum = 0 end
  sum = math.max(0, sum)
  if #old > 0 then redis.call('hset', p, 'win_t', sum) end
  return n, sum
end

-- Ms until one more request and `need` more tokens fit under (rpm, tpm), 0 (0 = no cap).
local function window_wait(log, n, sum, rpm, tpm, need, now)
  local wait = 0
  if rpm > 0 and n >= rpm then
    local e = redis.call('zrange', log, n - rpm, n - rpm, 'WITHSCORES')
    wait = tonumber(e[2]) + WINDOW_MS - now
  end
  if tpm > 0 and sum + need > tpm then
    local e = redis.call('zrange', log, 0, WINDOW_SCAN - 1, 'WITHSCORES')
    local left, at = sum, nil
    for i = 1, #e, 2 do
      left = left - (tonumber(string.match(e[i], ' (%S+)$')) or 0)
      at = tonumber(e[i + 1])
      if left + need <= tpm then break end
    end
    if at ~= nil then wait = math.max(wait, at + WINDOW_MS - now) end
  end
  return math.max(wait, wait > 0 and 1 or 0)
end

-- Records one admission of `tokens` (a string, as the lease's estimate is written).
local function window_add(log, p, lease, tokens, sum, now)
  redis.call('zadd', log, now, lease .. ' ' .. tokens)
  redis.call('hset', p, 'win_t', sum + tonumber(tokens))
  expire_later(log, WINDOW_MS + 1000)
end

-- Corrects an admission still in the window from its estimate to the tokens really used.
local function window_correct(log, p, lease, estimate, delta)
  if delta == 0 then return end
  local old = lease .. ' ' .. estimate
  local at = redis.call('zscore', log, old)
  if not at then return end
  local used = math.max(0, tonumber(estimate) + delta)
  redis.call('zrem', log, old)
  redis.call('zadd', log, at, lease .. ' ' .. used)
  local sum = tonumber(redis.call('hget', p, 'win_t') or '0')
  redis.call('hset', p, 'win_t', math.max(0, sum + used - tonumber(estimate)))
end
