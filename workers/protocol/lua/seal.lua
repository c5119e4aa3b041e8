-- Called once the producer has submitted every line of a batch.
-- KEYS: batch. ARGV: now. Returns the batch's status.
-- include: finish
redis.call('hset', KEYS[1], 'sealed', '1')
finish_if_done(KEYS[1], ARGV[1])
return redis.call('hget', KEYS[1], 'status')
