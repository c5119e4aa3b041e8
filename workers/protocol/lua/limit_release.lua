-- Gives a lease back and corrects the token bucket by (real - estimated) tokens; records
-- limits the provider announced (x-ratelimit-limit-*), which then cap the configured ones.
-- KEYS: (state, leases, pause) per scope.
-- An answer other than a refusal (answered = 1) ends a probe's hold or an ended pause.
-- ARGV: now_ms, lease_id, token_delta, learned_rpm, learned_tpm, answered,
--       then (rpm, tpm, conc) per scope.
-- include: scopes
-- include: pause
local now, lease, delta = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local learned_rpm, learned_tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
local answered = ARGV[6] == '1'
for _, s in ipairs(scopes(7)) do
  redis.call('zrem', s.leases, lease)
  if answered then
    local p = read_pause(s.pause)
    if p ~= nil and (p.probing or p.until_ms <= now) then redis.call('del', s.pause) end
  end
  if s.tpm > 0 and delta ~= 0 then
    local t = 60000 / math.max(s.tpm - math.floor(s.tpm / 60), s.tpm * 0.5)
    local tat = tonumber(redis.call('hget', s.p, 'tat_t') or '0')
    redis.call('hset', s.p, 'tat_t', math.max(tat + delta * t, now - 60000))
  end
  if learned_rpm > 0 then redis.call('hset', s.p, 'learned_rpm', learned_rpm) end
  if learned_tpm > 0 then redis.call('hset', s.p, 'learned_tpm', learned_tpm) end
end
return 1
