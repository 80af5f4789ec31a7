-- The write script: one announcer's change to its swarm, its bucket's totals
-- in the same atomic step, then the reply (see `store.rs`, which owns the
-- meaning of every argument, and the crate doc for the data layout). Every
-- key is in the swarm's bucket, so in one Redis Cluster slot.
--
-- KEYS: seeders (S), leechers (L), snatches (N), the bucket's swarms (SW),
--   the bucket's totals of swarms, seeders and leechers (TW, TS, TL).
-- ARGV: member, op, now (ms), want, swarm id, snatch expiry (ms), reply.
--   op: remove | del_s | del_l | seeder | graduate | leecher | none
--   reply: write (only {ok}) | l (peers for a leecher) | s (for a seeder)
local S, L, N, SW = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local TW, TS, TL = KEYS[5], KEYS[6], KEYS[7]
local m, op, now, want, id = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local reply = ARGV[7]
local ok = 1
local ds, dl = 0, 0
if op == 'remove' then
  ds = -redis.call('ZREM', S, m)
  if ds == 0 then dl = -redis.call('ZREM', L, m) end
  if ds + dl == 0 then ok = 0 end
elseif op == 'del_s' then
  ds = -redis.call('ZREM', S, m)
  if ds == 0 then ok = 0 end
elseif op == 'del_l' then
  dl = -redis.call('ZREM', L, m)
  if dl == 0 then ok = 0 end
elseif op == 'seeder' or op == 'graduate' then
  ds = redis.call('ZADD', S, now, m)
  if ds == 1 then
    dl = -redis.call('ZREM', L, m)
    if op == 'graduate' then redis.call('INCR', N) end
  end
  redis.call('PEXPIRE', N, ARGV[6])
elseif op == 'leecher' then
  dl = redis.call('ZADD', L, now, m)
  if dl == 1 then ds = -redis.call('ZREM', S, m) end
  redis.call('PEXPIRE', N, ARGV[6])
end
-- The sets' sizes after the write tell whether the swarm existed before it
-- (the sizes less what the write added or removed): no EXISTS is needed.
local changed = ds ~= 0 or dl ~= 0
local nS, nL = 0, 0
if changed or reply ~= 'write' then
  nS = redis.call('ZCARD', S)
  nL = redis.call('ZCARD', L)
end
if changed then
  local exists = nS + nL > 0
  local existed = (nS - ds) + (nL - dl) > 0
  if exists and not existed then
    redis.call('SADD', SW, id)
    redis.call('INCR', TW)
  elseif existed and not exists then
    redis.call('SREM', SW, id)
    redis.call('DECR', TW)
  end
  if ds ~= 0 then redis.call('INCRBY', TS, ds) end
  if dl ~= 0 then redis.call('INCRBY', TL, dl) end
end
if reply == 'write' then return {ok} end
if op == 'none' and nS + nL == 0 then return {0} end
local sn = tonumber(redis.call('GET', N) or 0)
-- ZRANDMEMBER's sample is not uniform when it asks for a large share of
-- the set (it removes keys picked by a bucket-biased draw); then the whole
-- set goes back and the client draws.
local function sample(key, n, card)
  if n <= 0 or card == 0 then return {} end
  if card <= n * 3 then return redis.call('ZRANGE', key, 0, -1) end
  return redis.call('ZRANDMEMBER', key, n)
end
local seeds, leeches = {}, {}
if want > 0 then
  local have = 0
  if reply == 'l' then
    seeds = sample(S, want + 1, nS)
    for _, p in ipairs(seeds) do if p ~= m then have = have + 1 end end
  end
  if have < want then leeches = sample(L, want - have + 1, nL) end
end
-- Members back to back (each the swarm's family's size): one string each,
-- which the client splits, instead of a reply element per peer.
return {ok, nS, nL, sn, table.concat(seeds), table.concat(leeches)}
