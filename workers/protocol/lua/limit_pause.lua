-- Pauses a scope until until_ms (see lib/pause): extends, never shortens, a pause that a 429
-- set; replaces a probe's hold (the probe was refused: pause again).
-- KEYS: pause. ARGV: until_ms, now_ms.
-- include: pause
local until_ms, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local p = read_pause(KEYS[1])
if p == nil or p.probing or until_ms > p.until_ms then
  write_pause(KEYS[1], until_ms, math.max(1, until_ms - now), false, now)
end
return 1
