-- The Lua scripts of the Redis store (flask_asyncstate/stores/redis.py loads them by name).
--
-- Each script starts at its own "-- script: <name>" line and runs to the next one. An entry
-- is one hash: 'd' document, 'c' cancel flag, 'x' expiry in ms (0 = never), 'e':'v' epoch
-- and version. A write publishes the key on that key's own change channel
-- (<prefix>changed:<key>), heard only by processes that watch it; a cancel on
-- <prefix>cancel, heard by all. Each script touches one hash slot (Cluster-safe): an
-- entry's hash, or an owner index's two keys, which share a hash tag ('take' is given an
-- index's keys beside the entry's only on a standalone server).
--
-- Every command used here must be in the ACL rule of redis.py (ACL_COMMANDS): Redis checks the
-- commands a script runs against the user's permissions too.

-- script: read
local v = redis.call('HMGET', KEYS[1], 'd', 'c', 'x')
if not v[1] then return false end
if tonumber(v[3]) > 0 then redis.call('PEXPIRE', KEYS[1], v[3]) end
return {v[1], v[2] or ''}

-- script: create
-- Every script that sets the document also bumps its version 'v', which update's
-- compare-and-set checks: no WATCH/MULTI, which Redis Cluster clients cannot pipeline.
-- 'e' is a random epoch per create: a replacement after a removal never repeats a version.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'x', ARGV[2], 'v', 1, 'e', ARGV[4])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[3] .. KEYS[1], KEYS[1])
return 1

-- script: peek
-- Read for a compare-and-set: document, cancel flag, version.
local v = redis.call('HMGET', KEYS[1], 'd', 'c', 'v', 'e')
if not v[1] then return false end
return {v[1], v[2] or '', (v[4] or '') .. ':' .. (v[3] or '0')}

-- script: swap
-- Set the document only if its version is still ARGV[2]: 1 done (flag in the second
-- element), 0 someone wrote in between, false the entry is gone.
local v = redis.call('HMGET', KEYS[1], 'x', 'v', 'c', 'e')
if not v[1] then return false end
if (v[4] or '') .. ':' .. (v[2] or '0') ~= ARGV[2] then return {0, ''} end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', (tonumber(v[2]) or 0) + 1)
if tonumber(v[1]) > 0 then redis.call('PEXPIRE', KEYS[1], v[1]) end
redis.call('PUBLISH', ARGV[3] .. KEYS[1], KEYS[1])
return {1, v[3] or ''}

-- script: take
-- Set the document ARGV[1] only if the stored one is exactly ARGV[2] (a worker's take: the
-- job's payload carried the queued document, so no read before): 1 done (flag in the second
-- element), 0 it is another document, false the entry is gone. With KEYS[2..3] (an index's
-- two keys, same slot only), ARGV[4] leaves that index first, whatever is found.
if #KEYS == 3 then
  redis.call('SREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
end
local v = redis.call('HMGET', KEYS[1], 'd', 'x', 'v', 'c')
if not v[1] then return false end
if v[1] ~= ARGV[2] then return {0, ''} end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', (tonumber(v[3]) or 0) + 1)
if tonumber(v[2]) > 0 then redis.call('PEXPIRE', KEYS[1], v[2]) end
redis.call('PUBLISH', ARGV[3] .. KEYS[1], KEYS[1])
return {1, v[4] or ''}

-- script: write
-- One read (expiry, version, cancel flag) and one write of document and version: the
-- fewest commands per write, since every job's progress and end come this way.
local v = redis.call('HMGET', KEYS[1], 'x', 'v', 'c')
if not v[1] then return false end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'v', (tonumber(v[2]) or 0) + 1)
if tonumber(v[1]) > 0 then redis.call('PEXPIRE', KEYS[1], v[1]) end
redis.call('PUBLISH', ARGV[2] .. KEYS[1], KEYS[1])
return v[3] or ''

-- script: cancel
local x = redis.call('HGET', KEYS[1], 'x')
if not x then return 0 end
redis.call('HSET', KEYS[1], 'c', '1')
if tonumber(x) > 0 then redis.call('PEXPIRE', KEYS[1], x) end
redis.call('PUBLISH', ARGV[1], KEYS[1])
return 1

-- script: touch
local x = redis.call('HGET', KEYS[1], 'x')
if not x then return 0 end
if tonumber(x) > 0 then redis.call('PEXPIRE', KEYS[1], x) end
return 1

-- script: tally
-- Counters (a parent job's children): ARGV holds name, delta pairs, then the ttl in ms.
for i = 1, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
return 1

-- script: claim
-- An owner's index: KEYS[1] the set of active members, KEYS[2] a sorted set of recent ones.
-- ARGV: member, limit, keep, score, ttl_ms. Both keys share the hash tag: one slot.
local active = redis.call('SCARD', KEYS[1])
if active >= tonumber(ARGV[2]) then return 0 end
active = active + redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - active - tonumber(ARGV[3])
if excess > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if excess <= 0 then break end
    if redis.call('SISMEMBER', KEYS[1], m) == 0 then
      redis.call('ZREM', KEYS[2], m)
      excess = excess - 1
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
