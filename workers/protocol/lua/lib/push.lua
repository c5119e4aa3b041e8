-- Pushes messages exactly as dramatiq's own `enqueue` does (hset <queue>.msgs, rpush <queue>),
-- written together: `push` notes a message, `wake` writes the noted ones with one HSET and
-- one RPUSH per queue (per PUSH_STEP messages), in the order noted, not two commands each
-- (the script is atomic: nobody sees the queue in between).
-- Queue q (0-based) is KEYS[QKEY + 2q] (the list) and KEYS[QKEY + 2q + 1] (the message hash),
-- named ARGV[QNAME + q]; the script sets QKEY and QNAME.
local QKEY, QNAME
local PUSH_STEP = 500
local noted = {}
local function push(q, mid, data)
  local n = noted[q]
  if n == nil then
    n = {fields = {}, ids = {}}
    noted[q] = n
  end
  n.fields[#n.fields + 1] = mid
  n.fields[#n.fields + 1] = data
  n.ids[#n.ids + 1] = mid
end
-- Writes the noted messages, then names each filled queue on `channel`, so idle consumers
-- fetch now, not at their next poll.
local function wake(channel)
  for q, n in pairs(noted) do
    for i = 1, #n.ids, PUSH_STEP do
      local j = math.min(i + PUSH_STEP - 1, #n.ids)
      redis.call('hset', KEYS[QKEY + 2 * q + 1], unpack(n.fields, 2 * i - 1, 2 * j))
      redis.call('rpush', KEYS[QKEY + 2 * q], unpack(n.ids, i, j))
    end
    redis.call('publish', channel, ARGV[QNAME + q])
  end
end
