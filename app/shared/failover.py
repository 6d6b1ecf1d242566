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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from app.cache.flight import MemoryLeases
from app.cache.store import MemoryCache
from app.config import Settings
from app.errors import RedisUnavailable
from app.routing.cooldowns import MemoryCooldowns
from app.shared.budget import RedisBudget
from app.shared.connection import DOWN, Shared
from app.shared.quotas import _day_ms
from app.status.sessions import MemorySessions
from app.team.budget import MemoryBudget
from app.team.quotas import DAY, KeyLimits, LimitView, MemoryQuotas

log = logging.getLogger(__name__)

T = TypeVar("T")
BEAT_SECONDS = 1.0  # heartbeat and, while Redis is away, probe
ALIVE_SECONDS = 5.0  # a replica counts as alive this long after its last heartbeat
# No call may wait longer than this, whatever the socket timeouts do.
CALL_DEADLINE = 0.5
OPEN_FIELD = ""  # open mode's key (None) as a budget hash field, as RedisBudget writes it


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
        shared.on_down = self._went_down  # a queued write that found Redis away

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

    @property
    def replica(self) -> str:
        """This replica's id in the heartbeat set (and its activity's key)."""
        return self._id

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

    async def queue(
        self, shared: Callable[[], Awaitable[None]], local: Callable[[], Awaitable[None]]
    ) -> None:
        """`shared()` that only queues a write (sent later, `Shared.later`): no I/O to
        put a deadline on; `local()` while Redis is away."""
        await (shared() if self.up else local())

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
