-- A scope's state hash as an admission reads it: at most one HMGET per scope and call, of
-- what the scope's checks need: with `learns` (the last scope, where lib/learned's buckets
-- live) the two buckets' limits; with `capped` (a configured rpm/tpm) f.learned_rpm,
-- f.learned_tpm and f.win_t (lib/window); with `gated` (the first-answer gate) f.nohdr,
-- f.first_until and f.aimd. A scope that needs none of them is not read. Where a bucket was
-- learned, a second HMGET reads the buckets: f[1..4] requests, f[5..8] tokens (lib/learned's
-- `learned_level(f, now, 0)` and `(f, now, 4)`); else those are nil. Absent fields are false
-- or nil.
local BUCKET_FIELDS = {'lr_lim', 'lr_rate', 'lr_lvl', 'lr_at', 'lt_lim', 'lt_rate', 'lt_lvl', 'lt_at'}
-- the fields besides the buckets' limits, by (capped, gated)
local EXTRA = {
  [true] = {[true] = {'learned_rpm', 'learned_tpm', 'win_t', 'nohdr', 'first_until', 'aimd'},
            [false] = {'learned_rpm', 'learned_tpm', 'win_t'}},
  [false] = {[true] = {'nohdr', 'first_until', 'aimd'}, [false] = {}},
}

local function read_state(p, capped, gated, learns)
  local extra = EXTRA[capped][gated]
  local out = {}
  if not learns then
    if #extra == 0 then return out end
    local f = redis.call('hmget', p, unpack(extra))
    for j, n in ipairs(extra) do out[n] = f[j] end
    return out
  end
  local f = redis.call('hmget', p, 'lr_lim', 'lt_lim', unpack(extra))
  for j, n in ipairs(extra) do out[n] = f[2 + j] end
  if f[1] or f[2] then
    local b = redis.call('hmget', p, unpack(BUCKET_FIELDS))
    for j = 1, 8 do out[j] = b[j] end
  end
  return out
end
