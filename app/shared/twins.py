"""The stores as the pipeline sees them while Redis may be away (DESIGN §12): each call
goes to Redis while it answers, else to this replica's memory twin, as `Failover` says.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence

from app.cache.flight import FlightLeases
from app.cache.store import CacheStats, CacheStore, Entry
from app.errors import QuotaExceeded
from app.routing.cooldowns import CooldownStore, ModelStates
from app.shared.budget import RedisBudget
from app.shared.connection import DOWN
from app.shared.failover import CALL_DEADLINE, OPEN_FIELD, Failover
from app.shared.quotas import RedisQuotas
from app.status.sessions import Session, SessionStore
from app.team.budget import BudgetView
from app.team.fair_share import BudgetRefusal
from app.team.quotas import DAY, Grant, KeyLimits, LimitView


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
        if self._f.up:  # sent off the client's path: the answer need not wait for it
            self._redis.release_soon(key, lease)

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

        await f.queue(lambda: self._redis.add_tokens(key, tokens, now), local)

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
                counted = (math.floor(now / DAY), key_name or OPEN_FIELD)
                f.local.free_counts[counted] = f.local.free_counts.get(counted, 0) + 1
            return refused

        return await f.run(lambda: self._redis.take(key_name, members, now), local)

    async def mark_active(self, key_name: str, now: float) -> None:
        await self._f.queue(
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

    def expect(self, models: Sequence[str], now: float) -> None:
        if self._f.up:
            self._redis.expect(models, now)

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
        await self._f.queue(
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

    def expect(self, key: str) -> None:
        if self._f.up:
            self._redis.expect(key)

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
