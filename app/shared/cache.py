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

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from app.cache.flight import ELSEWHERE, STORED
from app.cache.store import CacheStats, Entry
from app.shared.connection import Shared
from app.shared.wire import Arg, Batch

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

# ARGV[1..4]: entry prefix, name, now, ttl s. `blob`: the live entry (false on a miss),
# its recency renewed; the lookup counted as a hit or a miss.
_FIND = """
local born = redis.call('ZSCORE', KEYS[2], ARGV[2])
local blob = false
if born and tonumber(born) > tonumber(ARGV[3]) - tonumber(ARGV[4]) then
  blob = redis.call('GET', ARGV[1] .. ARGV[2])
end
if blob then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[7]), ARGV[2])
  redis.call('INCR', KEYS[5])
else
  if born then drop(ARGV[2]) end
  redis.call('INCR', KEYS[6])
end
"""

_GET = _DROP + _FIND + "return blob\n"

# The lookup a cacheable request sends along with its admission (DESIGN §12 "Cheap": one
# round trip before the upstream call): `_GET`, and on a miss the flight lease taken at
# once, for `LOOK_LEASE_MS` (the leader lengthens it, `RedisLeases.take`). ARGV: as
# `_FIND`, then lease key, token, ms. Returns {blob} or {false, token or holder}.
_LOOK = (
    _DROP
    + _FIND
    + """
if blob then return {blob} end
if redis.call('SET', ARGV[5], ARGV[6], 'NX', 'PX', ARGV[7]) then return {false, ARGV[6]} end
return {false, redis.call('GET', ARGV[5]) or ''}
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

LOOK_LEASE_MS = 2000  # a lease taken along with a lookup that never leads lapses by then
LOOKS_KEPT = 256  # lookups sent along and not yet read: past it, the oldest are dropped
SWEEP_SECONDS = 0.05  # a lease taken along and not led by then is given back

# ARGV: entry prefix, now, ttl s.
_STATS = (
    _DROP
    + """
purge(tonumber(ARGV[2]), tonumber(ARGV[3]))
return {redis.call('ZCARD', KEYS[2]), redis.call('GET', KEYS[4]) or 0,
        redis.call('GET', KEYS[5]) or 0, redis.call('GET', KEYS[6]) or 0}
"""
)


# KEYS: lease. ARGV: token. A lease taken along with a lookup and not led is given back.
_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


class _Look:
    """A lookup sent along with the admission's round trip (`Shared.read_along`); a lease
    it took is noted as it arrives, so one the request never leads (it was refused, or
    follows another in this process) is given back (`RedisCache._sweep`)."""

    __slots__ = ("answer", "args", "key", "keys", "on_lease", "sha", "token")

    def __init__(
        self,
        key: str,
        command: tuple[str, list[str], list[Arg]],
        token: str,
        on_lease: Callable[[str, str, bytes], None],
    ) -> None:
        self.key, self.token, self.on_lease = key, token, on_lease
        self.sha, self.keys, self.args = command
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def add(self, batch: Batch) -> None:
        batch.script(self.sha, _LOOK, self.keys, self.args)

    def deliver(self, result: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(result)  # an error too: `get` reads for itself then
        if isinstance(result, list) and result[0] is None:
            self.on_lease(self.key, self.token, result[1])


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
        self._shared = shared
        self._get = shared.script(_GET)
        self._look = shared.script(_LOOK)
        self._give_back = shared.script(_GIVE_BACK)
        self._looks: dict[str, _Look] = {}  # sent along, not yet read by `get`
        self._leases: dict[str, tuple[str, float]] = {}  # key -> what its look's take gave
        self._sweeping = False
        self._put = shared.script(_PUT)
        self._stats = shared.script(_STATS)

    def expect(self, key: str) -> None:
        """`get(key)` follows soon: send it with the next round trip (the admission's), and
        on a miss take the flight lease in the same script (`RedisLeases.take` reads it)."""
        if len(self._looks) >= LOOKS_KEPT:  # looks no `get` read (refused requests)
            self._shared.unread(self._looks.pop(next(iter(self._looks))))
        token = secrets.token_hex(8)
        lease = self._shared.key("flight", key)
        args: list[Arg] = [self._entries, key, repr(self._clock()), self._ttl, lease, token]
        command = (self._look.sha, self._keys, [*args, LOOK_LEASE_MS])
        look = _Look(key, command, token, self._taken)
        self._looks[key] = look
        self._shared.read_along(look)

    async def get(self, key: str) -> Entry | None:
        look = self._looks.pop(key, None)
        if look is not None:
            if not look.answer.done():
                await self._shared.read(look, look.answer)
            answer = look.answer.result()
            if not isinstance(answer, BaseException):
                blob = answer[0]
                return None if blob is None else decode(blob)
        args: list[Arg] = [self._entries, key, repr(self._clock()), self._ttl]
        blob = await self._shared.call(self._get.sha, _GET, self._keys, args)
        return None if blob is None else decode(blob)

    def _taken(self, key: str, token: str, held: bytes) -> None:
        mine = held == token.encode()
        state = token if mine else STORED if held == STORED.encode() else ELSEWHERE
        self._leases[key] = (state, time.monotonic())
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def lease(self, key: str) -> str | None:
        """What the lookup's lease take gave for `key` (a token: this request leads), once."""
        taken = self._leases.pop(key, None)
        return None if taken is None else taken[0]

    def _sweep(self) -> None:
        """Give back the leases taken along with a lookup that no request led (it was
        refused, or follows another in this process): another replica then need not
        wait for them to lapse."""
        self._sweeping = False
        old = time.monotonic() - SWEEP_SECONDS
        for key, (state, when) in list(self._leases.items()):
            if when <= old:
                del self._leases[key]
                if state not in (STORED, ELSEWHERE):
                    lease = self._shared.key("flight", key)
                    sha = self._give_back.sha
                    self._shared.post("EVALSHA", sha, 1, lease, state, source=_GIVE_BACK)
        if self._leases:
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    async def put(self, key: str, entry: Entry) -> bool:
        """Sent with this loop turn's other writes (the lease's end, the release), not
        waited for: whether it fits is known here, and every later call of this replica
        goes after it on the same connection. Another replica sees it once the lease
        that makes it wait says `STORED`, which follows it in the same write."""
        size = entry.size
        if size > self.max_bytes:
            return False
        now = repr(self._clock())
        args: list[Arg] = [self._entries, key, now, self._ttl, encode(entry), size, self.max_bytes]
        self._shared.post(
            "EVALSHA", self._put.sha, len(self._keys), *self._keys, *args, source=_PUT
        )
        return True

    async def stats(self) -> CacheStats:
        args: list[Arg] = [self._entries, repr(self._clock()), self._ttl]
        entries, size, hits, misses = await self._shared.call(
            self._stats.sha, _STATS, self._keys, args
        )
        return CacheStats(int(entries), int(size), int(hits), int(misses))
