-- Marks a batch finished once it is sealed (all lines submitted) and every line has a result.
local function finish_if_done(batch, now)
  local v = redis.call('hmget', batch, 'total', 'completed', 'failed', 'sealed', 'status')
  if v[4] == '1' and tonumber(v[2] or 0) + tonumber(v[3] or 0) >= tonumber(v[1] or 0) then
    if v[5] == 'in_progress' or v[5] == 'validating' or v[5] == 'finalizing' then
      redis.call('hset', batch, 'status', 'completed', 'finished_at', now)
    elseif v[5] == 'cancelling' then
      redis.call('hset', batch, 'status', 'cancelled', 'finished_at', now)
    end
  end
end
