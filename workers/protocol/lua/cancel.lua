-- Cancels a batch: its queued requests end `cancelled` unsent, in-flight ones finish.
-- KEYS: batch, optionally the cancels channel. ARGV: now, the batch id (with the channel): the
-- id is published there, so workers stop sending its requests before their next call.
-- Returns the batch's status, or nil when it does not exist.
-- include: finish
local status = redis.call('hget', KEYS[1], 'status')
if not status then return false end
if status == 'in_progress' or status == 'validating' or status == 'finalizing' then
  redis.call('hset', KEYS[1], 'status', 'cancelling', 'cancelled_at', ARGV[1])
  finish_if_done(KEYS[1], ARGV[1])
end
status = redis.call('hget', KEYS[1], 'status')
if KEYS[2] and (status == 'cancelling' or status == 'cancelled') then
  redis.call('publish', KEYS[2], ARGV[2])
end
return status
