-- Enqueues one chunk of a batch's messages, each only if its custom_id is new to the batch.
-- KEYS: batch, ids, wake channel, then (queue list, queue message hash) per queue used.
-- ARGV: ttl_s, seal_at ('' or, for a batch's last chunk, the time to seal it at), blob of
--       (custom_id SEP queue index SEP message id SEP message SEP)*, then the queue names, in
--       KEYS order.
-- Returns the 0-based positions of duplicates. A chunk with duplicates does not seal: the
-- producer writes their error results first (they count), then seals (seal.lua).
-- include: field
-- include: push
-- include: finish
QKEY, QNAME = 4, 4
local batch, ids, channel = KEYS[1], KEYS[2], KEYS[3]
local ttl, seal_at = tonumber(ARGV[1]), ARGV[2]
blob, pos = ARGV[3], 1
local cids, qs, mids, datas, n = {}, {}, {}, {}, 0
while pos <= #blob do
  n = n + 1
  cids[n], qs[n], mids[n], datas[n] = field(), tonumber(field()), field(), field()
end
-- Which custom_ids are new to the batch: one SMISMEMBER and one SADD per STEP messages, not
-- an SADD each (a script's call costs about what the command does). A custom_id twice in the
-- chunk is new the first time only, as SADD one by one said.
local STEP = 1000  -- unpack stops at Lua's C stack
local dups, new, seen = {}, {}, {}
for i = 1, n, STEP do
  local j = math.min(i + STEP - 1, n)
  local known = redis.call('smismember', ids, unpack(cids, i, j))
  for k = i, j do
    local cid = cids[k]
    if known[k - i + 1] == 1 or seen[cid] then
      dups[#dups + 1] = k - 1
    else
      seen[cid] = true
      new[#new + 1] = cid
      push(qs[k], mids[k], datas[k])
    end
  end
end
for i = 1, #new, STEP do
  redis.call('sadd', ids, unpack(new, i, math.min(i + STEP - 1, #new)))
end
local added = #new
redis.call('hincrby', batch, 'total', added)
redis.call('expire', ids, ttl)
redis.call('expire', batch, ttl)
if seal_at ~= '' and #dups == 0 then
  redis.call('hset', batch, 'sealed', '1')
  finish_if_done(batch, seal_at)
end
wake(channel)
return dups
