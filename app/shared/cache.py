"""Response cache entries in Redis (DESIGN §12): an answer stored through one replica is a
hit on every replica, and `PROXY_CACHE_MAX_MB` bounds all of them together.

The bound is kept by the proxy's own accounting, never by Redis `maxmemory` eviction
(which could drop quota keys): each entry's measured size (`Entry.size`, the memory store's
unit) is recorded beside it, and `put` evicts least recently used entries in the same
script until the total fits. Recency is a counter (no clock ties, no skew between
replicas); age is the injected clock's, so an entry past `ttl` is a miss on every replica.
Every key expires: entries after `ttl`, the bookkeeping after `ttl` without a `put`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from app.cache.store import CacheStats, Entry
from app.shared.connection import Shared

# KEYS: recency, birth, sizes, bytes, hits, misses, recency counter.
# Entry keys are ARGV[1] .. name; a dropped name is removed from every structure at once.
_DROP = """
local function drop(name)
  local size = redis.call('HGET', KEYS[3], name)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], name)
  end
  redis.call('ZREM', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
  redis.call('DEL', ARGV[1] .. name)
end
local function purge(now, ttl)
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
    drop(name)
  end
end
"""

# ARGV: entry prefix, name, now, ttl s.
_GET = (
    _DROP
    + """
local born = redis.call('ZSCORE', KEYS[2], ARGV[2])
local blob = false
if born and tonumber(born) > tonumber(ARGV[3]) - tonumber(ARGV[4]) then
  blob = redis.call('GET', ARGV[1] .. ARGV[2])
end
if blob then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[7]), ARGV[2])
  redis.call('INCR', KEYS[5])
  return blob
end
if born then drop(ARGV[2]) end
redis.call('INCR', KEYS[6])
return false
"""
)

# ARGV: entry prefix, name, now, ttl s, blob, size, bound.
_PUT = (
    _DROP
    + """
local size, bound = tonumber(ARGV[6]), tonumber(ARGV[7])
if size > bound then return 0 end
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
purge(now, ttl)
drop(ARGV[2])
while tonumber(redis.call('GET', KEYS[4]) or '0') + size > bound do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
end
local ms = math.floor(ttl * 1000) + 1000
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[5], 'PX', ms)
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[7]), ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], size)
redis.call('INCRBY', KEYS[4], size)
for i = 1, 7 do redis.call('PEXPIRE', KEYS[i], ms) end
return 1
"""
)

# ARGV: entry prefix, now, ttl s.
_STATS = (
    _DROP
    + """
purge(tonumber(ARGV[2]), tonumber(ARGV[3]))
return {redis.call('ZCARD', KEYS[2]), redis.call('GET', KEYS[4]) or 0,
        redis.call('GET', KEYS[5]) or 0, redis.call('GET', KEYS[6]) or 0}
"""
)


def encode(entry: Entry) -> bytes:
    meta = orjson.dumps([entry.stream, entry.model, entry.created, entry.headers])
    return meta + b"\n" + entry.body


def decode(blob: bytes) -> Entry:
    meta, _, body = blob.partition(b"\n")
    stream, model, created, headers = orjson.loads(meta)
    return Entry(body, stream, model, created, tuple((k, v) for k, v in headers))


class RedisCache:
    """Entries of every replica, bounded together by measured bytes and by age."""

    def __init__(
        self,
        shared: Shared,
        max_bytes: int,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._ttl = ttl
        self._clock = clock
        key = shared.key
        self._keys = [
            key("cache", name) for name in ("lru", "born", "sizes", "bytes", "hits", "misses", "n")
        ]
        self._entries = key("cache", "e", "")
        self._get = shared.script(_GET)
        self._put = shared.script(_PUT)
        self._stats = shared.script(_STATS)

    async def get(self, key: str) -> Entry | None:
        blob = await self._get(self._keys, [self._entries, key, repr(self._clock()), self._ttl])
        return None if blob is None else decode(blob)

    async def put(self, key: str, entry: Entry) -> bool:
        size = entry.size
        if size > self.max_bytes:
            return False
        now = repr(self._clock())
        args: list[str | float | bytes] = [self._entries, key, now, self._ttl, encode(entry)]
        return bool(await self._put(self._keys, [*args, size, self.max_bytes]))

    async def stats(self) -> CacheStats:
        entries, size, hits, misses = await self._stats(
            self._keys, [self._entries, repr(self._clock()), self._ttl]
        )
        return CacheStats(int(entries), int(size), int(hits), int(misses))
