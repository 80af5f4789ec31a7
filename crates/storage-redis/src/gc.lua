-- The garbage collection script, run on one batch of swarms from one
-- bucket's set of swarms (see `gc.rs`): removes peers last seen before the
-- cutoff, forgets the swarms it emptied, and adjusts the bucket's totals by
-- what it actually removed, so two instances collecting at once do no harm.
-- Every key is in the bucket, so in one Redis Cluster slot.
--
-- KEYS: the bucket's swarms, its totals of swarms, seeders and leechers, then
--   each swarm's seeders and leechers, in pairs.
-- ARGV: the cutoff (unix ms; older is removed), then each swarm's id.
local SW, TW, TS, TL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff = '(' .. ARGV[1]
local ds, dl, dsw = 0, 0, 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local S, L = KEYS[2 * i + 1], KEYS[2 * i + 2]
  ds = ds + redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
  dl = dl + redis.call('ZREMRANGEBYSCORE', L, '-inf', cutoff)
  if redis.call('EXISTS', S, L) == 0 then
    dsw = dsw + redis.call('SREM', SW, id)
  end
end
if ds ~= 0 then redis.call('DECRBY', TS, ds) end
if dl ~= 0 then redis.call('DECRBY', TL, dl) end
if dsw ~= 0 then redis.call('DECRBY', TW, dsw) end
return ds + dl
