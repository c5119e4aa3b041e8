-- One API key's gateway request rate: GCRA over a sliding window, up to window/interval
-- requests at once, then one per interval, never more than that many in any window, whatever
-- the clock minute.
-- KEYS: the key's rate state (GatewayKeys.rate).
-- ARGV: now (ms), emission interval (ms), burst window (ms).
-- Returns 0 when the request is admitted, else the ms until one would be.
local now, interval, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('get', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat + interval - now - window
if wait > 0 then return math.ceil(wait) end
redis.call('set', KEYS[1], tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
return 0
