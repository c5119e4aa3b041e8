-- Re-runs dead letters: for each key still in `failed`, forget its result (so the new one can
-- be stored), take it out of the counts, and enqueue the new message. Atomic, so two
-- concurrent `retry --failed` cannot run a request twice.
-- KEYS: batch, done, failed, wake channel, then (queue list, queue message hash) per queue.
-- ARGV: blob as for enqueue.lua (custom_id = result key), then the queue names.
-- Returns how many were enqueued.
-- include: field
-- include: push
QKEY, QNAME = 5, 2
local batch, done, failed, channel = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
blob, pos = ARGV[1], 1
local added = 0
while pos <= #blob do
  local key, q, mid, data = field(), tonumber(field()), field(), field()
  local dead = redis.call('hget', failed, key)
  if dead then
    local status = cjson.decode(dead)['status']
    redis.call('hdel', failed, key)
    redis.call('hdel', done, key)
    redis.call('hincrby', batch, 'failed', -1)
    redis.call('hincrby', batch, 'n_' .. status, -1)
    push(q, mid, data)
    added = added + 1
  end
end
if added > 0 then
  redis.call('hset', batch, 'status', 'in_progress')
  redis.call('hdel', batch, 'finished_at')
end
wake(channel)
return added
