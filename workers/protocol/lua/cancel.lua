-- Cancels a batch: its queued requests end `cancelled` unsent, in-flight ones finish.
-- KEYS: batch. ARGV: now. Returns the batch's status, or nil when it does not exist.
-- include: finish
local status = redis.call('hget', KEYS[1], 'status')
if not status then return false end
if status == 'in_progress' or status == 'validating' or status == 'finalizing' then
  redis.call('hset', KEYS[1], 'status', 'cancelling', 'cancelled_at', ARGV[1])
  finish_if_done(KEYS[1], ARGV[1])
end
return redis.call('hget', KEYS[1], 'status')
