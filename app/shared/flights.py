"""Single-flight leases in Redis (DESIGN §12): identical misses on different replicas make
one upstream call. A lease is one key per cache key, `SET NX PX` with a token, so it lapses
with a replica that died mid-call; the leader replaces it with `STORED` once the answer is
in the shared cache, or deletes it when there is nothing to share."""

from __future__ import annotations

import secrets

from app.cache.flight import ELSEWHERE, STORED, STORED_SECONDS
from app.shared.cache import RedisCache
from app.shared.connection import Shared
from app.shared.wire import Batch

# KEYS: lease. ARGV: token, ms. The token if taken, else what holds it ('' if it just lapsed).
_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('GET', KEYS[1]) or ''
"""

# KEYS: lease. ARGV: token, STORED or '' (nothing stored), ms STORED stays.
_END = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


# KEYS: lease. ARGV: token, ms. The leader of a lease taken along with a lookup lengthens it.
_LENGTHEN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""


class RedisLeases:
    """`FlightLeases` shared by every replica on one Redis. A lease may have been taken
    already, along with the cache lookup in the admission's round trip (`RedisCache`)."""

    def __init__(self, shared: Shared, cache: RedisCache | None = None) -> None:
        self._shared = shared
        self._cache = cache
        self._take = shared.script(_TAKE)
        self._end = shared.script(_END)
        self._lengthen = shared.script(_LENGTHEN)
        self._lengthened: list[tuple[str, str, int]] = []  # queued: lease, token, ms
        shared.queue(self._queue_lengthened)

    def _key(self, key: str) -> str:
        return self._shared.key("flight", key)

    async def take(self, key: str, seconds: float) -> str:
        ms = max(1, int(seconds * 1000))
        taken = None if self._cache is None else self._cache.lease(key)
        if taken is not None:
            if taken not in (STORED, ELSEWHERE):  # ours, for the lookup's short while:
                self._lengthened.append((self._key(key), taken, ms))  # queued, off the path
                self._shared.later()
            return taken
        token = secrets.token_hex(8)
        held = await self._shared.call(self._take.sha, _TAKE, [self._key(key)], [token, ms])
        if held == token.encode():
            return token
        return STORED if held == STORED.encode() else ELSEWHERE

    def _queue_lengthened(self, batch: Batch) -> None:
        lengthened, self._lengthened = self._lengthened, []
        for lease, token, ms in lengthened:
            batch.script(self._lengthen.sha, _LENGTHEN, [lease], [token, ms])

    async def state(self, key: str) -> str | None:
        batch = Batch()
        batch.add("GET", self._key(key))
        (held,) = await self._shared.send(batch)  # after what this replica posted
        if held is None:
            return None
        return STORED if held == STORED.encode() else ELSEWHERE

    async def end(self, key: str, token: str, stored: bool) -> None:
        marker = STORED if stored else ""
        # Posted: it follows the answer's `put` in the same write (see `RedisCache.put`).
        ms = int(STORED_SECONDS * 1000)
        self._shared.post(
            "EVALSHA", self._end.sha, 1, self._key(key), token, marker, ms, source=_END
        )
