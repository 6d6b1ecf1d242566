"""The account's free allowance and the active keys in Redis (DESIGN §12), so every
replica counts the same calls and computes the same fair share.

`take` is one optimistic transaction: WATCH the counts, read them, decide with the pure
rules of `team/fair_share.py` (written once for every store), and count in MULTI/EXEC; if
another replica counted meanwhile, EXEC fails and it decides again on the new counts.

A key's last use only decides whether it is active (used within 7 days), so each replica
writes it once a `MARK_SECONDS` per key rather than on every request (a key drops out of
the share at most a minute early), and queued: it goes with the request's admission.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from app.shared.connection import Shared
from app.shared.wire import Batch
from app.team import fair_share
from app.team.budget import BudgetView
from app.team.fair_share import ACTIVE_SECONDS, BudgetRefusal, FreeCounts
from app.team.quotas import DAY, MINUTE, next_midnight

_OPEN = ""  # open mode's key (None) as a hash field: no key name is empty
_FOLLOWED_MS = 2 * 86_400_000  # GET /key is followed every few minutes
MARK_SECONDS = 60.0  # a key's use is written again once this much later than the last write

# KEYS: last-used hash. ARGV: name, when, expiry ms. A later use only ever replaces.
_MARK = """
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""

# KEYS: day counts, followed. ARGV: limit, reported, expiry ms. `outside` only ever rises.
_FOLLOW = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', 172800000)
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local outside = tonumber(ARGV[2]) - spent
if outside > tonumber(redis.call('HGET', KEYS[1], 'outside') or '0') then
  redis.call('HSET', KEYS[1], 'outside', outside)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


def _day_ms(now: float) -> int:
    return int((next_midnight(now) - now + 3600) * 1000)


class RedisBudget:
    def __init__(self, shared: Shared, rpm: int, rpd: int) -> None:
        self._shared = shared
        self._rpm, self._rpd = rpm, rpd
        self._minute = shared.key("budget", "minute")
        self._followed = shared.key("budget", "followed")
        self._active = shared.key("budget", "active")
        self._marked: dict[str, float] = {}  # key -> the use this replica last wrote
        self._marks: dict[str, float] = {}  # uses queued, not yet sent
        shared.queue(self._queue_marks)
        self._follow = shared.script(_FOLLOW)
        self._mark_sha = shared.script(_MARK).sha

    def _day(self, now: float) -> str:
        return self._shared.key("budget", "day", str(math.floor(now / DAY)))

    async def _read(self, pipe: Pipeline, now: float) -> tuple[FreeCounts, dict[str, float]]:
        """The counts and last uses at `now`, read while watching (immediate mode)."""
        minute = await pipe.zrangebyscore(self._minute, f"({now - MINUTE}", "+inf", withscores=True)
        day = await pipe.hgetall(self._day(now))
        return self._parse(
            now, minute, day, await pipe.get(self._followed), await pipe.hgetall(self._active)
        )

    async def _read_now(self, now: float) -> tuple[FreeCounts, dict[str, float]]:
        """The same in one round trip, the writes queued here first (a key's use queued
        here counts in what is read)."""
        batch = self._shared.queued()
        first = len(batch)
        batch.add("ZRANGEBYSCORE", self._minute, f"({now - MINUTE}", "+inf", "WITHSCORES")
        batch.add("HGETALL", self._day(now))
        batch.add("GET", self._followed)
        batch.add("HGETALL", self._active)
        replies = (await self._shared.send(batch))[first:]
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        minute, day, followed, active = replies
        scores = [(member, float(score)) for member, score in _pairs(minute)]
        return self._parse(now, scores, dict(_pairs(day)), followed, dict(_pairs(active)))

    def _parse(
        self,
        now: float,
        minute: Any,  # [(member, score)]
        day: Any,  # {field: count}, bytes
        followed: Any,  # bytes or None
        active: Any,  # {name: when}, bytes
    ) -> tuple[FreeCounts, dict[str, float]]:
        counts = FreeCounts(self._rpm, self._rpd, None if followed is None else int(followed))
        counts.day = math.floor(now / DAY)
        counts.minute = deque(sorted(score for _, score in minute))
        for field, value in day.items():
            name = field.decode()
            if name.startswith("k:"):
                counts.by_key[name[2:] or None] = int(value)
        counts.spent = int(day.get(b"spent", 0))
        counts.outside = int(day.get(b"outside", 0))
        return counts, {k.decode(): float(v) for k, v in active.items()}

    async def take(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetRefusal | None:
        if self._marks:
            await self._shared.flush()  # a key's use queued here counts in the share
        day = self._day(now)
        watched = (self._minute, day, self._followed, self._active)
        async with self._shared.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*watched)
                    counts, last_used = await self._read(pipe, now)
                    keys = fair_share.active_keys(members, last_used, key_name, now)
                    refused = fair_share.refusal(counts, key_name, keys, now)
                    if refused is not None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return refused
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.zremrangebyscore(self._minute, "-inf", now - MINUTE)
                    pipe.zadd(self._minute, {f"{now!r}:{secrets.token_hex(6)}": now})
                    pipe.pexpire(self._minute, int(MINUTE * 1000) + 1000)
                    pipe.hincrby(day, "spent", 1)
                    pipe.hincrby(day, "k:" + (key_name or _OPEN), 1)
                    pipe.pexpire(day, _day_ms(now))
                    await pipe.execute()
                    return None
                except WatchError:
                    continue  # another replica counted first: decide again

    async def mark_active(self, key_name: str, now: float) -> None:
        """Queued: it goes with the request's admission (or on its own shortly after)."""
        if now < self._marked.get(key_name, -MARK_SECONDS) + MARK_SECONDS:
            return  # written lately: the active set is the same
        self._marked[key_name] = self._marks[key_name] = now
        self._shared.later()

    def _queue_marks(self, batch: Batch) -> None:
        marks, self._marks = self._marks, {}
        expiry_ms = int(ACTIVE_SECONDS * 1000)
        for name, when in marks.items():
            batch.script(self._mark_sha, _MARK, [self._active], [name, repr(when), expiry_ms])

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        reported = max(used, limit - remaining)
        await self._follow([self._day(now), self._followed], [limit, reported, _day_ms(now)])

    async def snapshot(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetView:
        counts, last_used = await self._read_now(now)
        keys = fair_share.active_keys(members, last_used, key_name, now)
        return {
            "share": counts.limit // len(keys),
            "used_by_key": counts.by_key.get(key_name, 0),
            "account_limit_today": counts.limit,
            "account_remaining_today": max(0, counts.remaining),
            "resets_at": next_midnight(now),
        }


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    """A RESP2 flat reply (`HGETALL`, `WITHSCORES`) as its pairs."""
    return list(zip(flat[::2], flat[1::2], strict=True))
