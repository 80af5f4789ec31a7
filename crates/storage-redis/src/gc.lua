-- The garbage collection script, run on one batch of swarms from `swarms`
-- (see `gc.rs`): removes peers last seen before the cutoff, forgets the swarms
-- it emptied, and adjusts the totals in `stats` by what it actually removed,
-- so two instances collecting at once do no harm.
--
-- KEYS: `swarms`, `stats`, then each swarm's seeders and leechers, in pairs.
-- ARGV: the cutoff (unix ms; older is removed), then each swarm's id.
local cutoff = '(' .. ARGV[1]
local ds, dl, dsw = 0, 0, 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local S, L = KEYS[2 * i - 1], KEYS[2 * i]
  ds = ds + redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
  dl = dl + redis.call('ZREMRANGEBYSCORE', L, '-inf', cutoff)
  if redis.call('EXISTS', S, L) == 0 then
    dsw = dsw + redis.call('SREM', KEYS[1], id)
  end
end
if ds ~= 0 then redis.call('HINCRBY', KEYS[2], 'seeders', -ds) end
if dl ~= 0 then redis.call('HINCRBY', KEYS[2], 'leechers', -dl) end
if dsw ~= 0 then redis.call('HINCRBY', KEYS[2], 'swarms', -dsw) end
return ds + dl
