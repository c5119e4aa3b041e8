-- Key TTLs set once per key and script call, after the script's work: `expire_later(key,
-- ms)` notes one (a later one for the same key replaces it, as a second PEXPIRE would), and
-- `expire_noted()` sets them. A batched call (scripts.batched) hands the includes one shared
-- table as `...` and sets the TTLs itself after the last call: its calls all touch the same
-- few keys, which then cost one PEXPIRE each per batch, not one per call.
local batch_ttls = ...
local noted_ttls = batch_ttls or {}
local function expire_later(key, ms) noted_ttls[key] = ms end
local function expire_noted()
  if batch_ttls then return end
  for key, ms in pairs(noted_ttls) do redis.call('pexpire', key, ms) end
end
