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
local dups, added, n = {}, 0, 0
while pos <= #blob do
  local cid, q, mid, data = field(), tonumber(field()), field(), field()
  if redis.call('sadd', ids, cid) == 1 then
    push(q, mid, data)
    added = added + 1
  else
    dups[#dups + 1] = n
  end
  n = n + 1
end
redis.call('hincrby', batch, 'total', added)
redis.call('expire', ids, ttl)
redis.call('expire', batch, ttl)
if seal_at ~= '' and #dups == 0 then
  redis.call('hset', batch, 'sealed', '1')
  finish_if_done(batch, seal_at)
end
wake(channel)
return dups
