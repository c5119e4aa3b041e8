-- Extends (never shortens) an endpoint's Retry-After pause.
-- KEYS: pause. ARGV: until_ms, now_ms.
local current = tonumber(redis.call('get', KEYS[1]) or '0')
local until_ms = tonumber(ARGV[1])
if until_ms > current then
  redis.call('set', KEYS[1], until_ms, 'PX', math.max(1, math.ceil(until_ms - ARGV[2])))
end
return 1
