-- Stores each result only if none exists for its (batch, key): a redelivered message cannot
-- create a second one. Many results per call, of any number of batches: workers coalesce.
-- KEYS: per batch of the call, (batch, done, results stream, failed).
-- ARGV: ttl_s, now, blob of (batch index, key, dead, cost, ledger), each field followed by
--       SEP, then each result's JSON in blob order. `dead` (may be empty) is a failed
--       request's dead letter; `cost` is empty when 0; `ledger` is "status count_in_total
--       input output cached reasoning". The JSON is an argument of its own, not a field of
--       the blob: Redis hashes every string Lua makes, the whole of it, so a result cut out
--       of the blob cost its bytes a second hashing (#22).
-- Returns one 1 (stored) or 0 (duplicate) per result.
-- include: finish
-- include: field
local ttl, now = tonumber(ARGV[1]), ARGV[2]
-- The batch's token totals, for the `usage` of its OpenAI batch object.
local USAGE = {'input_tokens', 'output_tokens', 'cached_tokens', 'reasoning_tokens'}
blob, pos = ARGV[3], 1
-- The call's results, read first: each batch's done marks are read with one HMGET and written
-- with one HSET per call, not an HSETNX and an HSET per result (#22).
local rows, keys = {}, {}
while pos <= #blob do
  local b = 4 * tonumber(field())
  local n = #rows + 1
  local row = {b, field(), ARGV[3 + n], field(), field(), field()}
  rows[n] = row
  local k = keys[b]
  if k == nil then
    k = {}
    keys[b] = k
  end
  k[#k + 1] = row[2]
end
-- Per batch: the keys it has a result for (stored before, or by this call), the done marks
-- to write (key, stream id, ...), and how many stored results have each ledger: counters are
-- added once per ledger, not once per result (a call carries hundreds, most alike).
-- Arguments go to HMGET and HSET in slices: unpack fails past Lua's C stack (8,000 values).
local STEP = 4000
local seen, marks, ledgers = {}, {}, {}
for b, k in pairs(keys) do
  local s = {}
  for j = 1, #k, STEP do
    local last = math.min(j + STEP - 1, #k)
    for i, mark in ipairs(redis.call('hmget', KEYS[b + 2], unpack(k, j, last))) do
      if mark then s[k[j + i - 1]] = true end
    end
  end
  seen[b], marks[b], ledgers[b] = s, {}, {}
end
local out = {}
for i, row in ipairs(rows) do
  local b, key, data, dead, cost, ledger = row[1], row[2], row[3], row[4], row[5], row[6]
  local s = seen[b]
  if s[key] then
    out[i] = 0
  else
    s[key] = true
    local m = marks[b]
    m[#m + 1] = key
    m[#m + 1] = redis.call('xadd', KEYS[b + 3], '*', 'k', key, 'r', data)
    if dead ~= '' then
      redis.call('hset', KEYS[b + 4], key, dead)
      redis.call('expire', KEYS[b + 4], ttl)
    end
    -- Each cost as sent, in order: HINCRBYFLOAT's own sum, as when added one by one.
    if cost ~= '' then redis.call('hincrbyfloat', KEYS[b + 1], 'cost_usd', cost) end
    local l = ledgers[b]
    l[ledger] = (l[ledger] or 0) + 1
    out[i] = 1
  end
end
for b, m in pairs(marks) do
  if #m > 0 then
    local batch = KEYS[b + 1]
    for j = 1, #m, STEP do
      redis.call('hset', KEYS[b + 2], unpack(m, j, math.min(j + STEP - 1, #m)))
    end
    local gains = {}
    local function gain(name, amount)
      gains[name] = (gains[name] or 0) + amount
    end
    for ledger, n in pairs(ledgers[b]) do
      local status, count, u1, u2, u3, u4 =
        string.match(ledger, '^(%S+) (%d) (%d+) (%d+) (%d+) (%d+)$')
      gain(status == 'succeeded' and 'completed' or 'failed', n)
      gain('n_' .. status, n)
      if count == '1' then gain('total', n) end
      for j, amount in ipairs({u1, u2, u3, u4}) do
        if amount ~= '0' then gain(USAGE[j], n * tonumber(amount)) end
      end
    end
    for name, amount in pairs(gains) do redis.call('hincrby', batch, name, amount) end
    finish_if_done(batch, now)
    redis.call('expire', batch, ttl)
    redis.call('expire', KEYS[b + 2], ttl)
    redis.call('expire', KEYS[b + 3], ttl)
  end
end
return out
