"""The Lua scripts behind name claims in a cluster (redis_hub.py): each runs atomically
in Redis, so two nodes never both give out one name.

Keys: ``chat:name:<key>`` (hash: node, name as written, login order), ``chat:look:<skeleton>``
(the key of the online name that looks like this), ``chat:names:<node>`` (the keys a
node holds), ``chat:online`` (sorted set: every key held, by login order: ``/list``),
``chat:nodes`` (every node seen), ``chat:order`` (the login counter), and
``chat:node:<node>``, the heartbeat: a holder whose heartbeat is gone holds nothing.
"""

#: Every key held, by login order (``/list``).
ONLINE = "chat:online"

_ALIVE = """
local function alive(node)
  return node and redis.call('EXISTS', 'chat:node:' .. node) == 1
end
"""

#: KEYS: name, look. ARGV: node, name as written, key, takeover (0/1).
#: Returns {0} refused, {1, '', order, name} new, {2, previous node, order, name} taken over.
CLAIM = _ALIVE + """
local held = redis.call('HGET', KEYS[1], 'node')
if held and alive(held) then
  if ARGV[4] ~= '1' then return {0, '', 0, ''} end
  redis.call('HSET', KEYS[1], 'node', ARGV[1])
  redis.call('SREM', 'chat:names:' .. held, ARGV[3])
  redis.call('SADD', 'chat:names:' .. ARGV[1], ARGV[3])
  return {2, held, redis.call('HGET', KEYS[1], 'order'), redis.call('HGET', KEYS[1], 'name')}
end
local look = redis.call('GET', KEYS[2])
if look and look ~= ARGV[3] then
  local other = redis.call('HGET', 'chat:name:' .. look, 'node')
  if other and alive(other) then return {0, '', 0, ''} end
end
local order = redis.call('INCR', 'chat:order')
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'name', ARGV[2], 'order', order)
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', 'chat:names:' .. ARGV[1], ARGV[3])
redis.call('SADD', 'chat:nodes', ARGV[1])
redis.call('ZADD', 'chat:online', order, ARGV[3])
return {1, '', order, ARGV[2]}
"""

#: KEYS: name, look. ARGV: node, key. Only the holder's release counts.
RELEASE = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', 'chat:names:' .. ARGV[1], ARGV[2])
redis.call('ZREM', 'chat:online', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""

#: After the link came back (Redis may have restarted empty): hold the name again unless
#: a live node holds it now. KEYS: name, look. ARGV: node, name, key, order.
REASSERT = _ALIVE + """
local held = redis.call('HGET', KEYS[1], 'node')
if held and held ~= ARGV[1] and alive(held) then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'name', ARGV[2], 'order', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', 'chat:names:' .. ARGV[1], ARGV[3])
redis.call('SADD', 'chat:nodes', ARGV[1])
redis.call('ZADD', 'chat:online', ARGV[4], ARGV[3])
if tonumber(redis.call('GET', 'chat:order') or '0') < tonumber(ARGV[4]) then
  redis.call('SET', 'chat:order', ARGV[4])
end
return 1
"""

#: A dead node's names: dropped where it still holds them. KEYS: its names set. ARGV: node.
REAP = """
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HGET', 'chat:name:' .. k, 'node') == ARGV[1] then
    redis.call('DEL', 'chat:name:' .. k)
    redis.call('ZREM', 'chat:online', k)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', 'chat:nodes', ARGV[1])
return 1
"""

#: The online name that looks like a name without being it (its display name), if a live
#: node holds it. KEYS: look. ARGV: key of the name. Returns '' when there is none.
LOOK_ALIKE = _ALIVE + """
local other = redis.call('GET', KEYS[1])
if not other or other == ARGV[1] then return '' end
local held = redis.call('HMGET', 'chat:name:' .. other, 'node', 'name')
if held[1] and alive(held[1]) then return held[2] end
return ''
"""
