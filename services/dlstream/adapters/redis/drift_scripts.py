"""The drift store's Lua scripts: each runs atomically in Redis, so a batch's predictions, their windows and
the windows' outcomes are stored all or nothing (:mod:`dlstream.adapters.redis.drift_store` calls them)."""

# Lua shared by the scripts that remember and look up predictions. Predictions are remembered in one hash
# per period of half the label ttl (Redis's clock), kept until three periods have begun: a label finds its
# prediction for at least one ttl and at most one and a half, and Redis holds at most one and a half ttl of
# predictions (125 bytes each, against 182 as a key each). ``seen_hashes`` gives the hashes to look in,
# the current one first, and when the current one expires; ``find_seen`` the seen encoding (false where
# none) of ``ids[first..last]`` in any of them, numbered from 1.
SEEN_HASHES = """
local function seen_hashes(prefix, label_ttl)
  local span = label_ttl / 2
  local period = math.floor(tonumber(redis.call('TIME')[1]) / span)
  local hashes = {}
  for back = 0, 2 do hashes[#hashes + 1] = prefix .. ':seen:' .. (period - back) end
  return hashes, math.ceil((period + 3) * span)
end
local function find_seen(hashes, ids, first, last)
  local found = {}
  for s = first, last, 1000 do
    local upto = math.min(s + 999, last)
    for _, hash in ipairs(hashes) do
      local part = redis.call('HMGET', hash, unpack(ids, s, upto))
      for j = 1, #part do found[s - first + j] = found[s - first + j] or part[j] end
    end
  end
  return found
end
"""

# KEYS: versions hash, counted hash, row widths hash.
# ARGV: n, label ttl, state ttl, cap, key prefix, window size, one string of length-prefixed fields
# (``length_prefixed``: per prediction its request id and seen encoding), the number of predictions without
# a window (they come first), then per version with windows: its model, its version, its number of
# predictions (next in order), its row width and their rows as one string.
# Predictions are remembered in the hashes of SEEN_HASHES. A few HMGETs and one HSET per batch instead of a
# SET per prediction: Redis spent 5.4 against 7.0 us per prediction in the script (medians of 8 runs of 40
# batches of 500). The keys are made here from the prefix (a script over many request ids was never
# confined to one Cluster slot). Early labels are looked for only while some may be parked (``park_labels``
# keeps a marker at least as long as any).
# A version's rows are one string of fixed-width rows, appended whole unless some prediction of the batch
# was seen before; its full windows are read back in the same call with their judging context.
# Returns which predictions were new ("1"/"0" per prediction), the early labels found (index, label), per
# version its number of rows, and per version with a full window: its name, the full windows' rows, its
# detector state, the model's open alert, whether the model's alert cooldown runs, and the windows judged.
RECORD_PREDICTIONS = (
    SEEN_HASHES
    + """
local n, label_ttl, state_ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local prefix, size, call, blob, pos = ARGV[5], tonumber(ARGV[6]), redis.call, ARGV[7], 1
local parked = call('EXISTS', prefix .. ':early-labels-parked') == 1
local hashes, expires = seen_hashes(prefix, label_ttl)
local ids, seens = {}, {}
for i = 1, n do
  ids[i], seens[i], pos = struct.unpack('>I4c0I4c0', blob, pos)
end
local known = find_seen(hashes, ids, 1, n)
local fresh, early, repeated, new, taken = {}, {}, false, {}, {}
for i = 1, n do
  local id = ids[i]
  if known[i] or taken[id] then
    fresh[i], repeated = '0', true
  else
    fresh[i], taken[id] = '1', true
    new[#new + 1] = id
    new[#new + 1] = seens[i]
  end
  if parked then
    local label = call('GETDEL', prefix .. ':early-label:' .. id)
    if label then
      early[#early + 1] = i
      early[#early + 1] = label
    end
  end
end
for s = 1, #new, 1000 do
  call('HSET', hashes[1], unpack(new, s, math.min(s + 999, #new)))
end
if #new > 0 then call('EXPIREAT', hashes[1], expires) end
local lengths, full = {}, {}
local first, at = tonumber(ARGV[8]) + 1, 9
while at <= #ARGV do
  local model, count, width, rows = ARGV[at], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), ARGV[at + 4]
  local name = model .. ':' .. ARGV[at + 1]
  local key = prefix .. ':window-rows:' .. name
  local added = rows
  if repeated then
    local kept = {}
    for i = 0, count - 1 do
      if fresh[first + i] == '1' then kept[#kept + 1] = string.sub(rows, i * width + 1, (i + 1) * width) end
    end
    added = table.concat(kept)
  end
  if #added > 0 then
    call('APPEND', key, added)
    call('HINCRBY', KEYS[2], name, #added / width)
  end
  call('HSET', KEYS[3], name, width)
  call('EXPIRE', KEYS[3], state_ttl)
  local length = math.floor(call('STRLEN', key) / width)
  lengths[#lengths + 1] = name
  lengths[#lengths + 1] = length
  if length > cap then
    call('SET', key, call('GETRANGE', key, (length - cap) * width, -1))
    length = cap
  end
  call('EXPIRE', key, state_ttl)
  call('HSETNX', KEYS[1], name, '{}')
  local windows = math.floor(length / size)
  if windows > 0 then
    full[#full + 1] = name
    full[#full + 1] = call('GETRANGE', key, 0, windows * size * width - 1)
    full[#full + 1] = call('GET', prefix .. ':state:' .. name)
    full[#full + 1] = call('GET', prefix .. ':alert:open:' .. model)
    full[#full + 1] = call('EXISTS', prefix .. ':alert:cooldown:' .. model)
    full[#full + 1] = call('GET', prefix .. ':windows:' .. name) or '0'
  end
  first, at = first + count, at + 5
end
return {table.concat(fresh), early, lengths, full}
"""
)

# KEYS: windows counter, rows, state, versions hash, open alert, alert history, cooldown, window history,
# row widths hash.
# ARGV: windows judged before these were read, windows judged now, their rows, state, state ttl, version
# name, summary, cooldown seconds (0: none), history length, the number of window records, the records, then
# per alert its status ("open" or "resolved") and JSON, in order.
SAVE_WINDOW_OUTCOMES = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local width = tonumber(redis.call('HGET', KEYS[9], ARGV[6]) or '0')
redis.call('SET', KEYS[2], redis.call('GETRANGE', KEYS[2], tonumber(ARGV[3]) * width, -1), 'EX', ARGV[5])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
local records = tonumber(ARGV[10])
for i = 11, 10 + records do redis.call('RPUSH', KEYS[8], ARGV[i]) end
if records > 0 then
  redis.call('LTRIM', KEYS[8], -tonumber(ARGV[9]), -1)
  redis.call('EXPIRE', KEYS[8], ARGV[5])
end
local first_alert = 11 + records
for i = first_alert, #ARGV, 2 do
  if ARGV[i] == 'open' then
    redis.call('SET', KEYS[5], ARGV[i + 1])
  else
    redis.call('DEL', KEYS[5])
    if tonumber(ARGV[8]) > 0 then redis.call('SET', KEYS[7], '1', 'EX', ARGV[8]) end
  end
  redis.call('LPUSH', KEYS[6], ARGV[i + 1])
end
if #ARGV >= first_alert then redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[9]) - 1) end
return 1
"""


# ARGV: label ttl, key prefix, request ids. Returns each id's seen encoding (nil where none), looked up in
# the hashes of SEEN_HASHES.
LOOKUP_SEEN = (
    SEEN_HASHES
    + """
return find_seen(seen_hashes(ARGV[2], tonumber(ARGV[1])), ARGV, 3, #ARGV)
"""
)
