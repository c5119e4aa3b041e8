-- Acks many messages in one call: dramatiq's dispatch.lua `ack` command, once per message,
-- each in the ack set the message was fetched into (its worker id at fetch time). Messages
-- come grouped by that set: one SREM each (its answer says whether to delete the data, as in
-- dispatch.lua), then one HDEL for the group's acked ids.
-- KEYS[1]: dramatiq's heartbeat zset; then for group g (g = 1..m):
--   KEYS[2g]: the ack set of (the group's fetch-time worker id, its queue), KEYS[2g+1]: its
--   queue's .msgs hash
-- ARGV[1]: timestamp (ms); ARGV[2]: the current worker id, whose heartbeat this refreshes;
--   then per group, in KEYS order: its count n, then its n redis_message_ids
-- Returns how many messages were acked (an id no longer in its ack set is skipped, as dramatiq does).
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local done, pos = 0, 3
for k = 2, #KEYS, 2 do
    local last = pos + tonumber(ARGV[pos])
    local acked = {}
    for i = pos + 1, last do
        if redis.call("srem", KEYS[k], ARGV[i]) > 0 then
            acked[#acked + 1] = ARGV[i]
        end
    end
    if #acked > 0 then
        redis.call("hdel", KEYS[k + 1], unpack(acked))
        done = done + #acked
    end
    pos = last + 1
end
return done
