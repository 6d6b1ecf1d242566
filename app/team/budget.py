"""The account's free allowance (DESIGN §7 "Budget" and "Fair share"): the proxy counts its
own calls to `:free` models against `PROXY_UPSTREAM_RPM` and `PROXY_UPSTREAM_RPD` and does
not send what OpenRouter would refuse. Every attempt counts, failed ones too, because
OpenRouter counts them (openrouter-api.md §5.1).

- Per minute: a sliding 60 s window. OpenRouter counts fixed minutes, but any fixed minute
  lies inside some sliding one, so the sliding count never exceeds OpenRouter's, whatever
  the skew between the two clocks.
- Per UTC day: the configured allowance, or the one `GET /key` reports in
  `free_model_daily_requests` once `follow` has seen it; calls made outside the proxy count.
- Fair share: each active key (the lead's `active_keys()`: not revoked, created or used in
  the last 7 days; the caller always counts) is guaranteed `limit // n` requests a day. A key
  past its share is served only while, after its call, what remains covers every other
  key's unused share. Those reserves shrink linearly to zero over the last 4 hours of the
  UTC day (rounded down), so nothing is left unused merely for a key that never came. In
  open mode (no keys) the allowance is one pool.

A refusal is for the calling key only: the caller treats `:free` candidates as cooling
until the returned time for this request, and must not cool them for everyone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

from app.errors import ProxyError
from app.team.quotas import DAY, MINUTE, next_midnight, reset_duration

log = logging.getLogger(__name__)

# Reserves for keys that have not used their share shrink to zero over this last stretch.
RELEASE_SECONDS = 4 * 3600.0
# How often `refresh` asks OpenRouter's GET /key ("every few minutes", DESIGN §7).
REFRESH_SECONDS = 300.0
# OpenRouter's own router over free models: zero-priced, but it spends the free allowance.
_FREE_ROUTER = "openrouter/free"


def spends_allowance(model: str) -> bool:
    """`:free` ids share the account's free-tier counter (openrouter-api.md §5.1, §9)."""
    return model.endswith(":free") or model == _FREE_ROUTER


class BudgetView(TypedDict):
    share: int  # requests a day guaranteed to this key (the whole allowance in one pool)
    used_by_key: int
    account_limit_today: int
    account_remaining_today: int
    resets_at: float


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Why a `:free` call may not go up now, and when that changes."""

    reason: Literal["minute", "day", "share"]
    until: float
    limit: int  # the per-minute or per-day allowance
    share: int = 0
    used_by_key: int = 0
    others: int = 0  # keys whose unused shares are held


class BudgetStore(Protocol):
    async def try_spend(self, key_name: str | None, model: str, now: float) -> float | None:
        """Count one attempt at `model`; None when counted, else when the budget frees up."""

    async def refusal(self, key_name: str | None, now: float) -> BudgetRefusal | None:
        """What `try_spend` would refuse now, and why; counts nothing."""

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        """Adopt OpenRouter's own daily count (GET /key `free_model_daily_requests`)."""

    async def snapshot(self, key_name: str | None, now: float) -> BudgetView: ...


class MemoryBudget:
    def __init__(
        self, rpm: int, rpd: int, active_keys: Callable[[], Collection[str]] = tuple
    ) -> None:
        self._rpm = rpm
        self._rpd = rpd
        self._followed: int | None = None
        self._active_keys = active_keys
        self._minute: deque[float] = deque()
        self._day = -1
        self._by_key: dict[str | None, int] = {}
        self._spent = 0  # the proxy's calls today, sum of _by_key
        self._outside = 0  # today's calls OpenRouter counted that the proxy did not make

    @property
    def _limit(self) -> int:
        return self._rpd if self._followed is None else self._followed

    def _roll(self, now: float) -> None:
        while self._minute and self._minute[0] <= now - MINUTE:
            self._minute.popleft()
        day = math.floor(now / DAY)
        if day != self._day:
            self._day, self._by_key, self._spent, self._outside = day, {}, 0, 0

    def _participants(self, key_name: str | None) -> set[str | None]:
        keys: set[str | None] = set(self._active_keys())
        keys.add(key_name)
        return keys

    def _decide(self, key_name: str | None, now: float) -> BudgetRefusal | None:
        self._roll(now)
        refusals: list[BudgetRefusal] = []
        if len(self._minute) >= self._rpm:
            over = len(self._minute) - self._rpm
            until = self._minute[over] + MINUTE if self._rpm > 0 else now + MINUTE
            refusals.append(BudgetRefusal("minute", until, self._rpm))
        remaining = self._limit - self._spent - self._outside
        if remaining < 1:
            refusals.append(BudgetRefusal("day", next_midnight(now), self._limit))
        else:
            share = self._share_refusal(key_name, remaining, now)
            if share is not None:
                refusals.append(share)
        return max(refusals, key=lambda r: r.until, default=None)

    def _share_refusal(
        self, key_name: str | None, remaining: int, now: float
    ) -> BudgetRefusal | None:
        keys = self._participants(key_name)
        if len(keys) < 2:
            return None
        share = self._limit // len(keys)
        mine = self._by_key.get(key_name, 0)
        if mine < share:
            return None
        unused = [share - self._by_key.get(k, 0) for k in keys if k != key_name]
        reserve = sum(u for u in unused if u > 0)
        # Allowed iff floor(reserve * factor) <= remaining - 1, i.e. reserve * factor < remaining.
        if reserve * _reserve_factor(now) < remaining:
            return None
        # The factor falls linearly to 0 at midnight: find when it drops below remaining/reserve.
        midnight = next_midnight(now)
        until = midnight - RELEASE_SECONDS * remaining / reserve + 0.001
        return BudgetRefusal(
            "share",
            until,
            self._limit,
            share=share,
            used_by_key=mine,
            others=sum(1 for u in unused if u > 0),
        )

    async def try_spend(self, key_name: str | None, model: str, now: float) -> float | None:
        if not spends_allowance(model):
            return None
        refusal = self._decide(key_name, now)
        if refusal is not None:
            return refusal.until
        self._minute.append(now)
        self._by_key[key_name] = self._by_key.get(key_name, 0) + 1
        self._spent += 1
        return None

    async def refusal(self, key_name: str | None, now: float) -> BudgetRefusal | None:
        return self._decide(key_name, now)

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        self._roll(now)
        self._followed = limit
        # OpenRouter's count may lag the proxy's own by a few calls: only ever raise it.
        reported = max(used, limit - remaining)
        self._outside = max(self._outside, reported - self._spent)

    async def snapshot(self, key_name: str | None, now: float) -> BudgetView:
        self._roll(now)
        keys = self._participants(key_name)
        return {
            "share": self._limit // len(keys),
            "used_by_key": self._by_key.get(key_name, 0),
            "account_limit_today": self._limit,
            "account_remaining_today": max(0, self._limit - self._spent - self._outside),
            "resets_at": next_midnight(now),
        }


def _reserve_factor(now: float) -> float:
    """1 until 20:00 UTC, then down linearly to 0 at midnight."""
    return min(1.0, (next_midnight(now) - now) / RELEASE_SECONDS)


def allowance_message(refusal: BudgetRefusal, now: float, key_name: str | None = None) -> str:
    """The 429 text when the free allowance (not a model) is what stands in the way."""
    back = time.strftime("%H:%M:%S", time.gmtime(refusal.until))
    wait = reset_duration(refusal.until - now)
    if refusal.reason == "minute":
        return (
            f"The account's free-model allowance of {refusal.limit} requests per minute is "
            f"used up; it frees up at {back} UTC (in {wait}). Retry then, or name a paid model."
        )
    if refusal.reason == "day":
        return (
            f"The account's free-model allowance of {refusal.limit} requests per day is used "
            f"up; it resets at 00:00 UTC (in {wait}). Retry then, or name a paid model "
            "(keys created with --paid)."
        )
    return (
        f"Key '{key_name}' has used {refusal.used_by_key} of the account's {refusal.limit} "
        f"free-model requests today, its fair share being {refusal.share}; the rest is held "
        f"for {refusal.others} other key(s) until {back} UTC (in {wait}). The allowance "
        "resets at 00:00 UTC."
    )


def free_daily(key_info: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """`(limit, remaining, used)` from GET /key's data, or None when OpenRouter omits it."""
    data = key_info.get("data", key_info)
    daily = data.get("free_model_daily_requests") if isinstance(data, Mapping) else None
    if not isinstance(daily, Mapping):
        return None
    values: list[int] = []
    for name in ("limit", "remaining", "used"):
        value = daily.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            return None
        values.append(int(value))
    limit, remaining, used = values
    return limit, remaining, used


async def refresh_once(
    budget: BudgetStore, fetch_key_info: Callable[[], Awaitable[Mapping[str, Any]]], now: float
) -> bool:
    """Follow GET /key once; False when it does not report the free daily allowance."""
    daily = free_daily(await fetch_key_info())
    if daily is None:
        return False
    await budget.follow(*daily, now)
    return True


async def refresh(
    budget: BudgetStore,
    fetch_key_info: Callable[[], Awaitable[Mapping[str, Any]]],
    clock: Callable[[], float],
    *,
    every: float = REFRESH_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Follow GET /key now and every `every` seconds until cancelled; failures are logged."""
    while True:
        try:
            await refresh_once(budget, fetch_key_info, clock())
        except (ProxyError, OSError) as exc:
            log.warning("could not read the free allowance from GET /key: %s", exc)
        await sleep(every)
