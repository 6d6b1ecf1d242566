"""The account's free allowance (DESIGN §7 "Budget"): the proxy counts its own calls to
`:free` models against `PROXY_UPSTREAM_RPM` and `PROXY_UPSTREAM_RPD` and does not send what
OpenRouter would refuse. Every attempt counts, failed ones too, because OpenRouter counts
them (openrouter-api.md §5.1).

State sits behind the small `BudgetStore` protocol (the counts and when each key was last
used); the rules that read it (fair share, active keys) are pure functions in
`team/fair_share.py`. A refusal is for the calling key only: the caller treats `:free`
candidates as cooling until the returned time for this request, and must not cool them
for everyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypedDict

from app.errors import ProxyError
from app.team import fair_share
from app.team.fair_share import BudgetRefusal, FreeCounts
from app.team.quotas import next_midnight, reset_duration

log = logging.getLogger(__name__)

# How often `refresh` asks OpenRouter's GET /key ("every few minutes", DESIGN §7).
REFRESH_SECONDS = 300.0


class BudgetView(TypedDict):
    share: int  # requests a day guaranteed to this key (the whole allowance in one pool)
    used_by_key: int
    account_limit_today: int
    account_remaining_today: int
    resets_at: float


class BudgetStore(Protocol):
    """The account's free counts and the keys' last use. Each operation is one atomic
    step (a shared store runs it as one script): never a read followed by a write."""

    async def take(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetRefusal | None:
        """Count one `:free` attempt by `key_name` if the rules of `fair_share` allow it
        (`members`: the key ring's names not revoked, with when each was created); else
        count nothing and say why and until when, all in one step."""

    async def mark_active(self, key_name: str, now: float) -> None:
        """`key_name` called at `now`: it shares the allowance for the next 7 days."""

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        """Adopt OpenRouter's own daily count (GET /key `free_model_daily_requests`)."""

    async def snapshot(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetView:
        """The allowance as GET /v1/usage and /metrics show it; counts nothing."""


class MemoryBudget:
    """In-process counts; on one event loop each operation runs with no await inside."""

    def __init__(self, rpm: int, rpd: int) -> None:
        self._counts = FreeCounts(rpm, rpd)
        self._last_used: dict[str, float] = {}

    async def take(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetRefusal | None:
        counts = self._counts
        counts.roll(now)
        keys = fair_share.active_keys(members, self._last_used, key_name, now)
        refused = fair_share.refusal(counts, key_name, keys, now)
        if refused is not None:
            return refused
        counts.minute.append(now)
        counts.by_key[key_name] = counts.by_key.get(key_name, 0) + 1
        counts.spent += 1
        return None

    async def mark_active(self, key_name: str, now: float) -> None:
        self._last_used[key_name] = max(now, self._last_used.get(key_name, 0.0))

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        counts = self._counts
        counts.roll(now)
        counts.followed = limit
        # OpenRouter's count may lag the proxy's own by a few calls: only ever raise it.
        reported = max(used, limit - remaining)
        counts.outside = max(counts.outside, reported - counts.spent)

    async def snapshot(
        self, key_name: str | None, members: Mapping[str, float], now: float
    ) -> BudgetView:
        counts = self._counts
        counts.roll(now)
        keys = fair_share.active_keys(members, self._last_used, key_name, now)
        return {
            "share": counts.limit // len(keys),
            "used_by_key": counts.by_key.get(key_name, 0),
            "account_limit_today": counts.limit,
            "account_remaining_today": max(0, counts.remaining),
            "resets_at": next_midnight(now),
        }


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
