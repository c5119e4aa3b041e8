-- Acks many messages in one call: dramatiq's dispatch.lua `ack` command, once per message,
-- each in the ack set the message was fetched into (its worker id at fetch time).
-- KEYS[1]: dramatiq's heartbeat zset; then for message i (i = 1..n):
--   KEYS[2i]: the ack set of (its fetch-time worker id, its queue), KEYS[2i+1]: its queue's .msgs hash
-- ARGV[1]: timestamp (ms); ARGV[2]: the current worker id, whose heartbeat this refreshes;
--   ARGV[2+i]: message i's redis_message_id
-- Returns how many messages were acked (an id no longer in its ack set is skipped, as dramatiq does).
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local done = 0
for i = 3, #ARGV do
    local k = 2 * (i - 2)
    if redis.call("srem", KEYS[k], ARGV[i]) > 0 then
        redis.call("hdel", KEYS[k + 1], ARGV[i])
        done = done + 1
    end
end
return done
