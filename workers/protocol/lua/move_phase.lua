-- Moves a gateway batch between phases only from the expected one, so a cancel and the end
-- of validation cannot both win.
-- KEYS: the gateway batch hash (GatewayKeys.batch).
-- ARGV: expected phase, new phase, then field/value pairs to set with the move.
-- Returns 1 when moved, 0 otherwise.
if redis.call('hget', KEYS[1], 'phase') ~= ARGV[1] then return 0 end
redis.call('hset', KEYS[1], 'phase', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
