-- Pushes a message exactly as dramatiq's own `enqueue` does (hset <queue>.msgs, rpush <queue>).
-- Queue q (0-based) is KEYS[QKEY + 2q] (the list) and KEYS[QKEY + 2q + 1] (the message hash),
-- named ARGV[QNAME + q]; the script sets QKEY and QNAME.
local QKEY, QNAME
local woken = {}
local function push(q, mid, data)
  redis.call('hset', KEYS[QKEY + 2 * q + 1], mid, data)
  redis.call('rpush', KEYS[QKEY + 2 * q], mid)
  woken[q] = true
end
-- Names each filled queue on `channel`, so idle consumers fetch now, not at their next poll.
local function wake(channel)
  for q in pairs(woken) do redis.call('publish', channel, ARGV[QNAME + q]) end
end
