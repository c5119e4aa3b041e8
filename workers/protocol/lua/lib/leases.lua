-- Concurrency leases in use in `leases`, expired ones (their worker died) dropped first.
local function leases_in_use(leases, now)
  redis.call('zremrangebyscore', leases, '-inf', now)
  return redis.call('zcard', leases)
end
