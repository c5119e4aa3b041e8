-- May one request be sent to an endpoint now?
-- KEYS: health, probe. ARGV: now_s, probe_ttl_ms, worker_id.
-- Returns {decision, state, open_until}: decision is 'allow', 'probe' (this worker may send
-- one request to a half-open endpoint) or 'deny'.
local health, probe = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local state = redis.call('hget', health, 'state') or 'closed'
local open_until = tonumber(redis.call('hget', health, 'open_until') or '0')
if state == 'closed' then return {'allow', state, tostring(open_until)} end
if state == 'open' and now < open_until then return {'deny', state, tostring(open_until)} end
if redis.call('set', probe, ARGV[3], 'NX', 'PX', ARGV[2]) then
  redis.call('hset', health, 'state', 'half_open')
  return {'probe', 'half_open', tostring(open_until)}
end
return {'deny', 'half_open', tostring(open_until)}
