-- Acks many messages in one call: dramatiq's dispatch.lua `ack` command, once per message,
-- each in the ack set the message was fetched into (its worker id at fetch time). Messages
-- come grouped by that set: one SMISMEMBER, one SREM and one HDEL per group, for the ids its
-- set still holds (dispatch.lua deletes a message's data only when its SREM removed it), not
-- a script-to-Redis call per message (#22).
-- KEYS[1]: dramatiq's heartbeat zset; then for group g (g = 1..m):
--   KEYS[2g]: the ack set of (the group's fetch-time worker id, its queue), KEYS[2g+1]: its
--   queue's .msgs hash
-- ARGV[1]: timestamp (ms); ARGV[2]: the current worker id, whose heartbeat this refreshes;
--   then per group, in KEYS order: its count n, then its n redis_message_ids
-- Returns how many messages were acked (an id no longer in its ack set is skipped, as dramatiq does).
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local done, pos = 0, 3
for k = 2, #KEYS, 2 do
    local first, last = pos + 1, pos + tonumber(ARGV[pos])
    if last >= first then
        local held = redis.call("smismember", KEYS[k], unpack(ARGV, first, last))
        local acked, seen = {}, {}
        for i, member in ipairs(held) do
            local id = ARGV[pos + i]
            if member == 1 and not seen[id] then
                seen[id] = true
                acked[#acked + 1] = id
            end
        end
        if #acked > 0 then
            redis.call("srem", KEYS[k], unpack(acked))
            redis.call("hdel", KEYS[k + 1], unpack(acked))
            done = done + #acked
        end
    end
    pos = last + 1
end
return done
