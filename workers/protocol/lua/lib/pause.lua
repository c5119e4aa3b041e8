-- A scope's pause (set by a 429 or an overload), as one string:
-- "<until_ms> <len_ms> <probing>". Until `until_ms` nobody sends. After it, one request
-- probes (`probing` = 1, `until_ms` moved on by `len_ms`) and the others poll until that
-- probe answers: a success deletes the key, another 429 pauses again. So a server that
-- refuses everything sees one request per pause, not the whole backlog at once.
local function read_pause(key)
  local raw = redis.call('get', key)
  if not raw then return nil end
  local u, len, probing = string.match(raw, '^(%S+) (%S+) (%S+)$')
  if not u then return {until_ms = tonumber(raw) or 0, len = 1000, probing = false} end
  return {until_ms = tonumber(u), len = tonumber(len), probing = probing == '1'}
end

local function write_pause(key, until_ms, len, probing, now)
  local flag = probing and '1' or '0'
  local ttl = math.max(1, math.ceil(until_ms - now + len + 1000))
  redis.call('set', key, string.format('%d %d %s', until_ms, len, flag), 'PX', ttl)
end
