-- Gives a lease back and corrects the configured token window (lib/window) and the learned
-- token buckets by (real - estimated) tokens; records limits the provider announced
-- (x-ratelimit-limit-*), which then cap the configured ones.
-- KEYS: (state, leases, pause, window) per scope.
-- An answer other than a refusal (answered = 1) ends a probe's hold or an ended pause. A
-- refusal the provider did not count (refunded = 1) gives its request and tokens back to
-- the learned buckets; then the answer's headers (limit, remaining, reset ms per bucket,
-- -1 unknown) are learned into the last scope (lib/learned).
-- ARGV: now_ms, lease_id, token_delta, learned_rpm, learned_tpm, answered, refunded,
--       estimate, r_limit, r_remaining, r_reset_ms, t_limit, t_remaining, t_reset_ms,
--       admitted_ms (when the lease was granted), then (rpm, tpm, conc) per scope.
-- include: expire
-- include: scopes
-- include: pause
-- include: learned
-- include: aimd
-- include: window
-- include: release_learned
-- include: release_group
local now, lease, delta = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local learned_rpm, learned_tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
local answered, refunded, estimate = ARGV[6] == '1', ARGV[7] == '1', tonumber(ARGV[8])
local all = scopes(16)
for i, s in ipairs(all) do
  -- an admission takes a lease where the scope caps concurrency, and in the last scope
  -- (adaptive concurrency); the others never hold one
  if s.conc > 0 or i == #all then redis.call('zrem', s.leases, lease) end
  if i == #all then
    -- the learned buckets live in the last scope only (`learn` below)
    if refunded then
      learned_add(s.p, 'lr_', 1, now)
      learned_add(s.p, 'lt_', estimate, now)
    elseif delta ~= 0 then
      learned_add(s.p, 'lt_', -delta, now)
    end
    learn(s.p, tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]),
          tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), now)
    if tonumber(ARGV[9]) > 0 or tonumber(ARGV[12]) > 0 then
      redis.call('hdel', s.p, 'first_until')
      expire_later(s.p, 3600000)
    else
      local g = redis.call('hmget', s.p, 'nohdr', 'aimd', 'aimd_cut_at')
      if g[1] then
        aimd_update(s.p, answered, aimd_cap(all), now, tonumber(ARGV[15]), g[2], g[3])
      elseif redis.call('hdel', s.p, 'first_until') == 1 and answered then
        -- the first answer had no limit headers (vLLM, llama.cpp): nothing to wait for; a
        -- refusal without them lets the next request try (after the pause it set)
        redis.call('hset', s.p, 'nohdr', 1)
      end
    end
  end
  if answered and i == 1 then  -- only the endpoint's scope is paused (limit_pause.lua)
    local p = read_pause(s.pause)
    if p ~= nil and (p.probing or p.until_ms <= now) then redis.call('del', s.pause) end
  end
  if s.tpm > 0 then window_correct(s.log, s.p, lease, ARGV[8], delta) end
  note_learned(s.p, learned_rpm, learned_tpm)
end
expire_noted()
return 1
