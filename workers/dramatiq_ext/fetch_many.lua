-- dramatiq's dispatch.lua `fetch` command (without its maintenance) in one pass over the
-- queue: LRANGE+LTRIM, one SADD and one HMGET for all the ids, where dispatch.lua does an LPOP
-- and an SADD per message. Same keys, same result, same state left behind.
-- KEYS[1]: dramatiq's heartbeat zset; KEYS[2]: the queue's id list; KEYS[3]: its .msgs hash;
-- KEYS[4]: the ack set of (worker id, queue)
-- ARGV[1]: timestamp (ms); ARGV[2]: the worker id; ARGV[3]: how many ids at most (callers
--   keep it within dramatiq's max_unpack_size, as dispatch.lua does)
-- Returns the messages' data in queue order (nil for an id whose data is gone, as dispatch.lua).
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local ids = redis.call("lrange", KEYS[2], 0, tonumber(ARGV[3]) - 1)
if #ids == 0 then
    return {}
end
redis.call("ltrim", KEYS[2], #ids, -1)
redis.call("sadd", KEYS[4], unpack(ids))
return redis.call("hmget", KEYS[3], unpack(ids))
