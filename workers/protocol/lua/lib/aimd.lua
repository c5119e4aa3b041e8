-- Adaptive concurrency for providers that announce no limits (vLLM, llama.cpp, most proxies):
-- a shared in-flight limit in the model scope's state hash ('aimd'). It starts at 10 and
-- doubles per round trip (+1 per clean answer) until the first refusal, which halves it: TCP's
-- initial window and slow start (RFC 6928, RFC 5681). From 4 and x1.5 per round trip, a
-- 500 ms server reached 256 in flight ~5 s into a batch, which cost a 5,000-request batch 30 %
-- of its wall time (#22); now ~2.5 s. Then +1 per round trip while answers are clean and x0.8
-- on a 429/503/timeout. A refusal of a request sent before the last cut says nothing new: one
-- cut per congestion event.
local AIMD_START, AIMD_CUT = 10, 0.8

-- The limit after one answer, and the new cut time if it cut (nil: no change at all).
-- `lim` is the hash's 'aimd' as a number (AIMD_START when absent), `cut_at` its
-- 'aimd_cut_at' (false: absent). A clean answer makes no C call (a release group runs this
-- once per request, #22).
local function aimd_next(ok, cap, now, admitted, lim, cut_at)
  if ok then
    if cut_at then lim = lim + 1 / lim else lim = lim + 1 end
    if lim > cap then return cap, nil end
    return lim, nil
  end
  if cut_at and admitted <= tonumber(cut_at) then return nil, nil end
  return math.max(1, lim * (cut_at and AIMD_CUT or 0.5)), now
end

local function aimd_update(p, ok, cap, now, admitted, limit, cut_at)
  local lim, cut = aimd_next(ok, cap, now, admitted, tonumber(limit or AIMD_START), cut_at)
  if lim == nil then return end
  if cut ~= nil then redis.call('hset', p, 'aimd_cut_at', cut) end
  redis.call('hset', p, 'aimd', lim)
end

-- The most adaptive concurrency may reach in a call's scopes (`all`, lib/scopes): the
-- endpoint's and the model's max_concurrency where configured, else 1024.
local function aimd_cap(all)
  local cap = all[1].conc > 0 and all[1].conc or 1024
  if all[#all].conc > 0 then cap = math.min(cap, all[#all].conc) end
  return cap
end
