-- The limiter scopes of a call: KEYS holds (state, leases, pause, window) per scope, ARGV
-- from `first` holds (rpm, tpm, conc) per scope.
local function scopes(first)
  local out, i, k = {}, first, 1
  while i <= #ARGV do
    out[#out + 1] = {p = KEYS[k], leases = KEYS[k + 1], pause = KEYS[k + 2], log = KEYS[k + 3],
                     rpm = tonumber(ARGV[i]), tpm = tonumber(ARGV[i + 1]),
                     conc = tonumber(ARGV[i + 2])}
    i = i + 3
    k = k + 4
  end
  return out
end
