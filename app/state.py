"""Which stores hold the proxy's state: in-process (the default) or shared through Redis
when `PROXY_REDIS_URL` is set (DESIGN §12), built here so `create_app` only wires them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.cache.flight import FlightLeases
from app.cache.store import CacheStore, MemoryCache
from app.config import MIB, Settings
from app.routing.cooldowns import CooldownStore, MemoryCooldowns
from app.status.sessions import MemorySessions, SessionStore
from app.team.budget import BudgetStore, MemoryBudget
from app.team.quotas import MemoryQuotas, QuotaStore

if TYPE_CHECKING:
    from app.shared.failover import Failover


@dataclass(frozen=True, slots=True)
class Stores:
    cooldowns: CooldownStore
    quotas: QuotaStore
    budget: BudgetStore
    cache: CacheStore
    sessions: SessionStore
    leases: FlightLeases | None  # single-flight across replicas; None in one process
    failover: Failover | None  # the switch to memory when Redis is away; None in memory

    async def start(self) -> None:
        if self.failover is not None:
            await self.failover.start()

    async def aclose(self) -> None:
        if self.failover is not None:
            await self.failover.aclose()
            await self.failover.shared.aclose()


def build_stores(settings: Settings, clock: Callable[[], float]) -> Stores:
    """Memory stores, or Redis ones on one shared client when PROXY_REDIS_URL is set."""
    if settings.redis_url is None:
        return Stores(
            MemoryCooldowns(clock),
            MemoryQuotas(clock),
            MemoryBudget(settings.upstream_rpm, settings.upstream_rpd),
            MemoryCache.from_mb(settings.cache_max_mb, settings.cache_ttl, time.monotonic),
            MemorySessions(),
            None,
            None,
        )
    return _shared_stores(settings, settings.redis_url, clock)


def _shared_stores(settings: Settings, url: str, clock: Callable[[], float]) -> Stores:
    """The Redis stores behind their failover. Imported here, not at the top: the redis
    client's modules cost a process about 7 MiB of memory that one without Redis never
    uses (bench/README.md, "Memory per open stream")."""
    from app.shared.budget import RedisBudget
    from app.shared.cache import RedisCache
    from app.shared.connection import Shared
    from app.shared.cooldowns import RedisCooldowns
    from app.shared.failover import Failover
    from app.shared.flights import RedisLeases
    from app.shared.quotas import RedisQuotas
    from app.shared.sessions import RedisSessions
    from app.shared.twins import (
        FailoverBudget,
        FailoverCache,
        FailoverCooldowns,
        FailoverLeases,
        FailoverQuotas,
        FailoverSessions,
    )

    shared = Shared(url, settings.redis_prefix)
    budget = RedisBudget(shared, settings.upstream_rpm, settings.upstream_rpd)
    failover = Failover(shared, settings, budget, clock)
    max_bytes = int(settings.cache_max_mb * MIB)
    cache = RedisCache(shared, max_bytes, settings.cache_ttl, clock)
    return Stores(
        FailoverCooldowns(failover, RedisCooldowns(shared, clock)),
        FailoverQuotas(failover, RedisQuotas(shared, clock)),
        FailoverBudget(failover, budget),
        FailoverCache(failover, cache),
        FailoverSessions(failover, RedisSessions(shared)),
        FailoverLeases(failover, RedisLeases(shared, cache)),
        failover,
    )
