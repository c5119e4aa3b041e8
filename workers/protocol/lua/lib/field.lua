-- Reads the next SEP (NUL)-terminated field of `blob` from `pos`; the script sets both.
local blob, pos
local function field()
  local stop = string.find(blob, '\0', pos, true)
  local value = string.sub(blob, pos, stop - 1)
  pos = stop + 1
  return value
end
