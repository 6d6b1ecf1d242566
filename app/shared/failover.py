"""Redis unreachable (DESIGN §12, `PROXY_REDIS_FAIL`): every shared store is wrapped so a
Redis error or timeout switches the replica to memory twins instead of failing requests.

`Failover` holds the switch, the twins and the heartbeat. While Redis answers, each store
call goes to Redis, and the heartbeat (every second) registers this replica in a sorted set
scored by time and remembers how many replicas are alive and what the free budget had left.
When a call fails, one line is logged and fresh memory twins take over: in `degraded` each
key may use what remained of every limit (its last view) and of the free budget, divided by
the replicas last seen alive, rounded down; in `open` the full limits; in `closed` the
pipeline refuses inference with 503 (`check`). The heartbeat keeps probing; when Redis
answers again the outage's day counts (`rpd`, `tpd`, free budget) are added to Redis with
INCRBY, the twins are dropped (rpm windows, leases, cooldowns, cache entries with them) and
state is shared again, with one more line logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from redis.exceptions import RedisError

from app.cache.flight import FlightLeases, MemoryLeases
from app.cache.store import CacheStats, CacheStore, Entry, MemoryCache
from app.config import Settings
from app.errors import QuotaExceeded, RedisUnavailable
from app.routing.cooldowns import CooldownStore, MemoryCooldowns, ModelStates
from app.shared.budget import RedisBudget
from app.shared.connection import Shared
from app.shared.quotas import RedisQuotas, _day_ms
from app.status.sessions import MemorySessions, Session, SessionStore
from app.team.budget import BudgetView, MemoryBudget
from app.team.fair_share import BudgetRefusal
from app.team.quotas import DAY, Grant, KeyLimits, LimitView, MemoryQuotas

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a dead or stuck Redis raises through redis-py (timeouts are TimeoutError or RedisError).
DOWN = (RedisError, OSError, TimeoutError)
BEAT_SECONDS = 1.0  # heartbeat and, while Redis is away, probe
ALIVE_SECONDS = 5.0  # a replica counts as alive this long after its last heartbeat
# No call may wait longer than this, whatever the socket timeouts do.
CALL_DEADLINE = 0.5
_OPEN = ""  # open mode's key (None) as a budget hash field, as RedisBudget writes it


@dataclass(slots=True)
class _Local:
    """The memory twins serving while Redis is away, and what they counted to add back."""

    quotas: MemoryQuotas
    budget: MemoryBudget
    cooldowns: MemoryCooldowns
    cache: MemoryCache
    sessions: MemorySessions
    leases: MemoryLeases = field(default_factory=MemoryLeases)
    day_counts: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # r, t
    free_counts: dict[tuple[int, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Share:
    """A key with its limits cut to this replica's share (satisfies `KeyLimits`)."""

    name: str
    rpm: int | None
    rpd: int | None
    tpd: int | None
    concurrency: int | None
    models: tuple[str, ...]
    paid: bool


class Failover:
    """The switch between Redis and the memory twins, and the replicas' heartbeat."""

    def __init__(
        self,
        shared: Shared,
        settings: Settings,
        budget: RedisBudget,
        clock: Callable[[], float],
    ) -> None:
        self.shared = shared
        self.mode: Literal["degraded", "closed", "open"] = settings.redis_fail
        self.up = True
        self.alive = 1  # replicas seen alive at the last heartbeat, this one included
        self._settings = settings
        self._budget = budget
        self._clock = clock
        self._id = secrets.token_hex(8)
        self._replicas = shared.key("replicas")
        self.free_left: int | None = None  # the free budget's day remaining, last view
        self._views: dict[str, tuple[int, dict[str, LimitView | None]]] = {}  # key -> day, views
        self.local = self._twins()
        self._beating: asyncio.Task[None] | None = None

    def _twins(self) -> _Local:
        s, clock = self._settings, self._clock
        rpm, rpd = s.upstream_rpm, s.upstream_rpd
        if self.mode == "degraded":
            rpd = self.free_left if self.free_left is not None else rpd
            rpm, rpd = rpm // self.alive, rpd // self.alive
        return _Local(
            MemoryQuotas(clock),
            MemoryBudget(rpm, rpd),
            MemoryCooldowns(clock),
            MemoryCache.from_mb(s.cache_max_mb, s.cache_ttl, time.monotonic),
            MemorySessions(),
        )

    async def start(self) -> None:
        """Register this replica now (a dead Redis is logged once, never raised), then
        renew every second until `aclose`."""
        await self._beat()
        self._beating = asyncio.create_task(self._beat_forever())

    async def aclose(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        if self.up:
            with contextlib.suppress(*DOWN):
                async with asyncio.timeout(CALL_DEADLINE):
                    await self.shared.client.zrem(self._replicas, self._id)

    def check(self) -> None:
        """Refuse an inference request while Redis is away in `closed` mode."""
        if not self.up and self.mode == "closed":
            raise RedisUnavailable(
                f"Redis at {self.shared.where} is unreachable and PROXY_REDIS_FAIL=closed: "
                "inference is refused until it answers again. See GET /readyz."
            )

    def detail(self) -> str:
        """What /readyz and the status page say of Redis (never the URL's password)."""
        if self.up:
            return f"Redis at {self.shared.where} answers; {self.alive} replica(s) alive"
        shares = {
            "degraded": f"each replica uses 1/{self.alive} of what remained of every limit",
            "open": "each replica uses its own state with full limits",
            "closed": "inference requests answer 503 redis_unavailable",
        }[self.mode]
        return (
            f"Redis at {self.shared.where} is unreachable (PROXY_REDIS_FAIL={self.mode}: "
            f"{shares}); state is shared again when it answers"
        )

    async def run(self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        """`shared()` on Redis; on a Redis failure (or while it is away) `local()`."""
        if self.up:
            try:
                async with asyncio.timeout(CALL_DEADLINE):
                    return await shared()
            except DOWN as error:
                self._went_down(error)
        return await local()

    def _went_down(self, error: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        self.local = self._twins()
        log.warning(
            "Redis at %s is unreachable (%s); PROXY_REDIS_FAIL=%s, %d replica(s) last seen alive",
            self.shared.where,
            type(error).__name__,
            self.mode,
            self.alive,
        )

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            await self._beat()

    async def _beat(self) -> None:
        now = self._clock()
        try:
            async with asyncio.timeout(CALL_DEADLINE * 2):
                async with self.shared.client.pipeline(transaction=True) as pipe:
                    pipe.zadd(self._replicas, {self._id: now})
                    pipe.zremrangebyscore(self._replicas, "-inf", now - ALIVE_SECONDS)
                    pipe.zcard(self._replicas)
                    pipe.pexpire(self._replicas, int(ALIVE_SECONDS * 1000) * 2)
                    alive = (await pipe.execute())[2]
                if not self.up:
                    await self._push_back()
                view = await self._budget.snapshot(None, {}, now)
        except DOWN as error:
            if self.up:
                self._went_down(error)
            return
        self.alive = max(1, int(alive))
        self.free_left = view["account_remaining_today"]
        if not self.up:
            self.up = True
            self.local = self._twins()
            log.warning("Redis at %s answers again: state is shared again", self.shared.where)

    async def _push_back(self) -> None:
        """Add the outage's day counts to Redis (rpm windows and leases are dropped). The
        counts are taken out first, so what the twins count meanwhile is kept for next time."""
        local, now = self.local, self._clock()
        day_counts, local.day_counts = local.day_counts, {}
        free_counts, local.free_counts = local.free_counts, {}
        try:
            async with self.shared.client.pipeline(transaction=True) as pipe:
                for (name, day), (requests, tokens) in day_counts.items():
                    counts = self.shared.key("q", name, "d", str(day))
                    pipe.hincrby(counts, "r", requests)
                    pipe.hincrby(counts, "t", tokens)
                    pipe.pexpire(counts, _day_ms(now))
                for (day, name), spent in free_counts.items():
                    counts = self.shared.key("budget", "day", str(day))
                    pipe.hincrby(counts, "spent", spent)
                    pipe.hincrby(counts, "k:" + name, spent)
                    pipe.pexpire(counts, _day_ms(now))
                await pipe.execute()
        except BaseException:
            for where, (requests, tokens) in day_counts.items():
                counted = local.day_counts.setdefault(where, [0, 0])
                counted[0] += requests
                counted[1] += tokens
            for which, spent in free_counts.items():
                local.free_counts[which] = local.free_counts.get(which, 0) + spent
            raise

    def remember(self, name: str, now: float, views: dict[str, LimitView | None]) -> None:
        self._views[name] = (math.floor(now / DAY), views)

    def share(self, key: KeyLimits, now: float) -> KeyLimits:
        """`key` with the limits this replica may use while Redis is away."""
        if self.mode != "degraded":
            return key
        day, views = self._views.get(key.name, (-1, {}))
        today = day == math.floor(now / DAY)

        def cut(name: str, limit: int | None) -> int | None:
            if limit is None:
                return None
            view = views.get(name)
            left = limit
            if view is not None and (name == "rpm" and (view["resets_at"] or 0) > now):
                left = view["remaining"]
            elif view is not None and name in ("rpd", "tpd") and today:
                left = view["remaining"]
            return left // self.alive

        return _Share(
            key.name,
            cut("rpm", key.rpm),
            cut("rpd", key.rpd),
            cut("tpd", key.tpd),
            cut("concurrency", key.concurrency),
            key.models,
            key.paid,
        )


class FailoverQuotas:
    """`QuotaStore` on Redis, or this replica's share in memory while Redis is away."""

    def __init__(self, failover: Failover, redis: RedisQuotas) -> None:
        self._f = failover
        self._redis = redis

    async def admit(self, key: KeyLimits | None, now: float) -> Grant:
        f = self._f
        if key is None:
            return await self._redis.admit(key, now)  # no I/O for a key without limits
        if f.up:
            try:
                async with asyncio.timeout(CALL_DEADLINE):
                    grant = await self._redis.admit(key, now)
                f.remember(key.name, now, grant.views)
                return grant
            except DOWN as error:
                f._went_down(error)
        local = f.local
        share = f.share(key, now)
        try:
            grant = await local.quotas.admit(share, now)
        except QuotaExceeded as refusal:
            if share is key:
                raise
            raise QuotaExceeded(
                f"{refusal.message} (Redis at {f.shared.where} is unreachable: this replica "
                f"may use 1/{f.alive} of what remained of the key's limits until it answers)",
                retry_after=refusal.retry_after,
                limit=refusal.limit,
                key_name=key.name,
            ) from None
        counts = local.day_counts.setdefault((key.name, math.floor(now / DAY)), [0, 0])
        counts[0] += 1
        return Grant(grant.views, None if grant.lease is None else -grant.lease)

    async def release(self, key: KeyLimits, lease: int) -> None:
        if lease < 0:  # granted by the twin
            await self._f.local.quotas.release(key, -lease)
            return
        if self._f.up:
            with contextlib.suppress(*DOWN):  # a lost release lapses with the lease
                async with asyncio.timeout(CALL_DEADLINE):
                    await self._redis.release(key, lease)

    async def add_tokens(
        self, key: KeyLimits | None, tokens: int, now: float | None = None
    ) -> None:
        f = self._f

        async def local() -> None:
            if key is None or key.tpd is None or tokens <= 0:
                return
            when = f._clock() if now is None else now
            await f.local.quotas.add_tokens(f.share(key, when), tokens, when)
            f.local.day_counts.setdefault((key.name, math.floor(when / DAY)), [0, 0])[1] += tokens

        await f.run(lambda: self._redis.add_tokens(key, tokens, now), local)

    async def seed(self, name: str, requests: int, tokens: int, now: float) -> None:
        await self._f.run(
            lambda: self._redis.seed(name, requests, tokens, now),
            lambda: self._f.local.quotas.seed(name, requests, tokens, now),
        )

    async def snapshot(self, key: KeyLimits | None, now: float) -> dict[str, LimitView | None]:
        f = self._f
        return await f.run(
            lambda: self._redis.snapshot(key, now),
            lambda: f.local.quotas.snapshot(None if key is None else f.share(key, now), now),
        )


class FailoverBudget:
    """`BudgetStore` on Redis, or in memory (the twin holds this replica's share)."""

    def __init__(self, failover: Failover, redis: RedisBudget) -> None:
        self._f = failover
        self._redis = redis

    async def take(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetRefusal | None:
        f = self._f

        async def local() -> BudgetRefusal | None:
            refused = await f.local.budget.take(key_name, members, now)
            if refused is None:
                counted = (math.floor(now / DAY), key_name or _OPEN)
                f.local.free_counts[counted] = f.local.free_counts.get(counted, 0) + 1
            return refused

        return await f.run(lambda: self._redis.take(key_name, members, now), local)

    async def mark_active(self, key_name: str, now: float) -> None:
        await self._f.run(
            lambda: self._redis.mark_active(key_name, now),
            lambda: self._f.local.budget.mark_active(key_name, now),
        )

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        await self._f.run(
            lambda: self._redis.follow(limit, remaining, used, now),
            lambda: self._f.local.budget.follow(limit, remaining, used, now),
        )

    async def snapshot(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetView:
        f = self._f

        async def shared() -> BudgetView:
            view = await self._redis.snapshot(key_name, members, now)
            f.free_left = view["account_remaining_today"]  # the last view, for an outage
            return view

        return await f.run(shared, lambda: f.local.budget.snapshot(key_name, members, now))


class FailoverCooldowns:
    """`CooldownStore` on Redis, or this replica's own marks while Redis is away."""

    def __init__(self, failover: Failover, redis: CooldownStore) -> None:
        self._f = failover
        self._redis = redis

    async def snapshot(self, models: Sequence[str], now: float) -> ModelStates:
        return await self._f.run(
            lambda: self._redis.snapshot(models, now),
            lambda: self._f.local.cooldowns.snapshot(models, now),
        )

    async def cool(self, model: str, until: float) -> None:
        await self._f.run(
            lambda: self._redis.cool(model, until),
            lambda: self._f.local.cooldowns.cool(model, until),
        )

    async def cool_free_tier(self, until: float) -> None:
        await self._f.run(
            lambda: self._redis.cool_free_tier(until),
            lambda: self._f.local.cooldowns.cool_free_tier(until),
        )

    async def mark_failing(self, model: str, until: float) -> None:
        await self._f.run(
            lambda: self._redis.mark_failing(model, until),
            lambda: self._f.local.cooldowns.mark_failing(model, until),
        )

    async def succeeded(self, model: str, latency: float | None) -> None:
        await self._f.run(
            lambda: self._redis.succeeded(model, latency),
            lambda: self._f.local.cooldowns.succeeded(model, latency),
        )

    async def failed(self, model: str) -> int:
        return await self._f.run(
            lambda: self._redis.failed(model), lambda: self._f.local.cooldowns.failed(model)
        )


class FailoverCache:
    """`CacheStore` on Redis, or a replica-local cache while Redis is away."""

    def __init__(self, failover: Failover, redis: CacheStore) -> None:
        self._f = failover
        self._redis = redis

    async def get(self, key: str) -> Entry | None:
        return await self._f.run(lambda: self._redis.get(key), lambda: self._f.local.cache.get(key))

    async def put(self, key: str, entry: Entry) -> bool:
        return await self._f.run(
            lambda: self._redis.put(key, entry), lambda: self._f.local.cache.put(key, entry)
        )

    async def stats(self) -> CacheStats:
        return await self._f.run(self._redis.stats, self._f.local.cache.stats)


class FailoverLeases:
    """`FlightLeases` on Redis, or coalescing within this replica while Redis is away."""

    def __init__(self, failover: Failover, redis: FlightLeases) -> None:
        self._f = failover
        self._redis = redis

    async def take(self, key: str, seconds: float) -> str:
        return await self._f.run(
            lambda: self._redis.take(key, seconds), lambda: self._f.local.leases.take(key, seconds)
        )

    async def state(self, key: str) -> str | None:
        return await self._f.run(
            lambda: self._redis.state(key), lambda: self._f.local.leases.state(key)
        )

    async def end(self, key: str, token: str, stored: bool) -> None:
        await self._f.run(
            lambda: self._redis.end(key, token, stored),
            lambda: self._f.local.leases.end(key, token, stored),
        )


class FailoverSessions:
    """`SessionStore` on Redis, or replica-local logins while Redis is away."""

    def __init__(self, failover: Failover, redis: SessionStore) -> None:
        self._f = failover
        self._redis = redis

    async def create(self, now: float) -> Session:
        return await self._f.run(
            lambda: self._redis.create(now), lambda: self._f.local.sessions.create(now)
        )

    async def get(self, session_id: str, now: float) -> Session | None:
        return await self._f.run(
            lambda: self._redis.get(session_id, now),
            lambda: self._f.local.sessions.get(session_id, now),
        )

    async def end(self, session_id: str) -> None:
        await self._f.run(
            lambda: self._redis.end(session_id), lambda: self._f.local.sessions.end(session_id)
        )
