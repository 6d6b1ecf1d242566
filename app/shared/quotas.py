"""Per-key quotas in Redis (DESIGN §12): one Lua script per admission checks and counts
every limit of the key at once, so replicas together admit exactly `rpm` in any 60 s.

Per key: a sorted set of admissions in the sliding minute, a hash of the UTC day's
requests and tokens, and a sorted set of concurrency leases scored by when each expires.
A replica renews its leases every `RENEW_SECONDS`; one that dies stops renewing, so its
leases expire within `LEASE_SECONDS`. The refusal text and the views are the memory
store's pure functions over the counts the script returns.

The admission is the request's one round trip before its upstream call: the writes other
stores queued go ahead of the script and their expected reads after it (`Shared.trip`).
Tokens arrive after an answer, when nobody waits for them: they are queued and go with
the next round trip (a lease's release, an admission) or on their own shortly after, so
a request makes one round trip after its upstream call at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from app.shared.connection import CALL_TIMEOUT, Shared
from app.shared.wire import Batch
from app.team.quotas import (
    DAY,
    NO_GRANT,
    Grant,
    KeyLimits,
    LimitView,
    _is_limited,
    _refusal,
    _views,
    next_midnight,
)

LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0
_NONE = -1  # an absent limit, as the script reads it

# KEYS: minute window, day counts, leases, lease ids.
# ARGV: admit (1) or only look (0), now, rpm, rpd, tpd, concurrency, day expiry ms, lease s.
_COUNT = """
local now = tonumber(ARGV[2])
local rpm, rpd = tonumber(ARGV[3]), tonumber(ARGV[4])
local tpd, conc = tonumber(ARGV[5]), tonumber(ARGV[6])
local lease_s = tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local requests = tonumber(redis.call('HGET', KEYS[2], 'r') or '0')
local tokens = tonumber(redis.call('HGET', KEYS[2], 't') or '0')
local held = redis.call('ZCARD', KEYS[3])
local admitted, lease = 0, 0
if ARGV[1] == '1'
  and not (rpm >= 0 and redis.call('ZCARD', KEYS[1]) >= rpm)
  and not (rpd >= 0 and requests >= rpd)
  and not (tpd >= 0 and tokens >= tpd)
  and not (conc >= 0 and held >= conc) then
  admitted = 1
  local id = redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], 2 * 86400000)
  if rpm >= 0 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('PEXPIRE', KEYS[1], 61000)
  end
  requests = redis.call('HINCRBY', KEYS[2], 'r', 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  if conc >= 0 then
    lease = id
    held = held + 1
    redis.call('ZADD', KEYS[3], now + lease_s, id)
    redis.call('PEXPIRE', KEYS[3], math.floor(lease_s * 1000) + 1000)
  end
end
-- Of the minute, only what the rules read: how many, the admission rpm places from the
-- newest (a refusal's wait) and the newest (the view's reset); never the whole window.
local n = redis.call('ZCARD', KEYS[1])
local over, newest = '', ''
if rpm > 0 and n >= rpm then
  over = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')[2]
end
if n > 0 then newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2] end
return {admitted, lease, requests, tokens, held, n, over, newest}
"""

# KEYS: day counts. ARGV: requests, tokens, day expiry ms. Counts only ever rise.
_SEED = """
for i, field in ipairs({'r', 't'}) do
  if tonumber(redis.call('HGET', KEYS[1], field) or '0') < tonumber(ARGV[i]) then
    redis.call('HSET', KEYS[1], field, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


class _Tail:
    """The sliding minute as Redis returned it: its length, and the admission times at the
    places the rules read (`_Window`)."""

    __slots__ = ("_known", "_n")

    def __init__(self, n: int, known: dict[int, float]) -> None:
        self._n = n
        self._known = known

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int, /) -> float:
        return self._known[index + self._n if index < 0 else index]


@dataclass(frozen=True, slots=True)
class _Read:
    """A key's counts as the admission script returned them (`_Seen`)."""

    minute: _Tail
    requests: int
    tokens: int
    leases: range  # the rules read only how many are in flight


def _limit(value: int | None) -> int:
    return _NONE if value is None else value


def _day_ms(now: float) -> int:
    """A day's counts live until an hour past the next midnight (late tokens still land)."""
    return int((next_midnight(now) - now + 3600) * 1000)


class RedisQuotas:
    def __init__(self, shared: Shared, clock: Callable[[], float]) -> None:
        self._shared = shared
        self._clock = clock
        self._count = shared.script(_COUNT)
        self._seed = shared.script(_SEED)
        self._held: dict[int, str] = {}  # this replica's leases in flight -> key name
        self._tokens: dict[str, tuple[int, int]] = {}  # day counts -> queued tokens, expiry ms
        shared.queue(self._queue_tokens)
        self._renewing: asyncio.Task[None] | None = None

    def _keys(self, name: str, now: float) -> list[str]:
        day = str(math.floor(now / DAY))
        key = self._shared.key
        return [key("q", name, "m"), key("q", name, "d", day), key("q", name, "c"), key("q", "id")]

    async def _run(self, key: KeyLimits, now: float, admit: bool) -> tuple[int, int, _Read]:
        keys = self._keys(key.name, now)
        args: list[int | float | str] = [
            int(admit),
            repr(now),
            _limit(key.rpm),
            _limit(key.rpd),
            _limit(key.tpd),
            _limit(key.concurrency),
            _day_ms(now),
            LEASE_SECONDS,
        ]
        # One round trip: the queued writes (tokens, successes, a key's use) go ahead of
        # the script, the expected reads (the cooldowns' snapshot) after it.
        sha, source = self._count.sha, _COUNT
        (answer,) = await self._shared.trip(lambda batch: batch.script(sha, source, keys, args))
        if isinstance(answer, ResponseError):
            raise answer
        admitted, lease, requests, tokens, held, n, over, newest = answer
        n = int(n)
        known = {n - 1: float(newest)} if newest else {}
        if over and key.rpm is not None:
            known[n - key.rpm] = float(over)
        counts = _Read(_Tail(n, known), int(requests), int(tokens), range(int(held)))
        return int(admitted), int(lease), counts

    async def admit(self, key: KeyLimits | None, now: float) -> Grant:
        if key is None or not _is_limited(key):
            return NO_GRANT
        admitted, lease, counts = await self._run(key, now, admit=True)
        if not admitted:
            refusal = _refusal(key, counts, now)
            assert refusal is not None  # the script refuses only for a reason the rule sees
            raise refusal
        if key.concurrency is None:
            return Grant(_views(key, counts, now))
        self._held[lease] = key.name
        if self._renewing is None or self._renewing.done():
            self._renewing = self._shared.background(self._renew())
        return Grant(_views(key, counts, now), lease)

    async def release(self, key: KeyLimits, lease: int) -> None:
        """Hand the lease back, with the tokens queued so far, in one round trip."""
        self._held.pop(lease, None)
        batch = self._shared.queued()
        batch.add(*self._released(key, lease))
        replies = await self._shared.send(batch)
        if isinstance(replies[-1], ResponseError):
            raise replies[-1]

    def release_soon(self, key: KeyLimits, lease: int) -> None:
        """`release` sent and not waited for: the answer to the client goes meanwhile."""
        self._held.pop(lease, None)
        self._shared.post(*self._released(key, lease))

    def _released(self, key: KeyLimits, lease: int) -> tuple[str, str, int]:
        return ("ZREM", self._shared.key("q", key.name, "c"), lease)

    async def add_tokens(
        self, key: KeyLimits | None, tokens: int, now: float | None = None
    ) -> None:
        if key is None or key.tpd is None or tokens <= 0:
            return
        now = self._clock() if now is None else now
        day = self._keys(key.name, now)[1]
        queued, _ = self._tokens.get(day, (0, 0))
        self._tokens[day] = (queued + tokens, _day_ms(now))
        self._shared.later()

    def _queue_tokens(self, batch: Batch) -> None:
        """Move the queued tokens into `batch` (they are this replica's to send only once)."""
        tokens, self._tokens = self._tokens, {}
        for day, (count, expiry_ms) in tokens.items():
            batch.add("HINCRBY", day, "t", count)
            batch.add("PEXPIRE", day, expiry_ms)

    async def seed(self, name: str, requests: int, tokens: int, now: float) -> None:
        await self._seed([self._keys(name, now)[1]], [requests, tokens, _day_ms(now)])

    async def snapshot(self, key: KeyLimits | None, now: float) -> dict[str, LimitView | None]:
        if key is None:
            return NO_GRANT.views
        _, _, counts = await self._run(key, now, admit=False)
        return _views(key, counts, now)

    async def _renew(self) -> None:
        """Push this replica's live leases' expiry forward while it holds any."""
        while self._held:
            await asyncio.sleep(RENEW_SECONDS)
            until = self._clock() + LEASE_SECONDS
            with contextlib.suppress(Exception):  # Redis away: the leases lapse, as they should
                async with asyncio.timeout(CALL_TIMEOUT * 2):
                    async with self._shared.client.pipeline(transaction=False) as pipe:
                        for lease, name in list(self._held.items()):
                            key = self._shared.key("q", name, "c")
                            pipe.zadd(key, {str(lease): until}, xx=True)
                        await pipe.execute()
