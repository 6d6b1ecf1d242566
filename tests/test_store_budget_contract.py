"""The `BudgetStore` contract (DESIGN §1, §7, §12): every implementation keeps these
promises. A shared (Redis) store joins by adding one line to `IMPLEMENTATIONS`."""

from __future__ import annotations

import asyncio
import calendar
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from app.shared.budget import RedisBudget
from app.shared.connection import Shared
from app.team.budget import BudgetStore, MemoryBudget
from app.team.fair_share import ACTIVE_SECONDS, BudgetRefusal
from tests.redis_server import shared_for

pytestmark = pytest.mark.anyio
MORNING = float(calendar.timegm((2025, 6, 1, 8, 0, 0)))
MIDNIGHT = float(calendar.timegm((2025, 6, 2, 0, 0, 0)))
LONG_AGO = MORNING - 30 * 86400  # created a month ago: active only if used lately

IMPLEMENTATIONS: dict[str, Callable[[Shared, int, int], BudgetStore]] = {
    "memory": lambda _, rpm, rpd: MemoryBudget(rpm, rpd),
    "redis": RedisBudget,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[int, int], BudgetStore]]:
    async with shared_for(request) as shared:
        yield functools.partial(IMPLEMENTATIONS[request.param], shared)


async def test_take_counts_until_the_minute_is_spent_and_a_refusal_counts_nothing(make):
    store = make(2, 100)
    assert await store.take(None, {}, MORNING) is None
    assert await store.take(None, {}, MORNING + 1) is None
    for _ in range(3):
        assert await store.take(None, {}, MORNING + 2) == BudgetRefusal("minute", MORNING + 60, 2)
    assert (await store.snapshot(None, {}, MORNING + 2))["used_by_key"] == 2
    assert await store.take(None, {}, MORNING + 60) is None


async def test_the_day_ends_at_midnight_utc(make):
    store = make(100, 1)
    assert await store.take(None, {}, MORNING) is None
    assert await store.take(None, {}, MORNING) == BudgetRefusal("day", MIDNIGHT, 1)
    assert await store.take(None, {}, MIDNIGHT) is None


async def test_check_and_count_are_one_step_under_concurrent_takes(make):
    store = make(10, 1000)
    start = asyncio.Event()

    async def one() -> BudgetRefusal | None:
        await start.wait()  # fire all 50 through one barrier
        return await store.take("A", {"A": MORNING}, MORNING)

    tasks = [asyncio.ensure_future(one()) for _ in range(50)]
    await asyncio.sleep(0)
    start.set()
    assert (await asyncio.gather(*tasks)).count(None) == 10


async def test_a_key_used_lately_shares_the_allowance_and_an_idle_one_does_not(make):
    store = make(1000, 50)
    members = {"A": LONG_AGO, "B": LONG_AGO}
    assert (await store.snapshot("A", members, MORNING))["share"] == 50  # B idle: one pool
    await store.mark_active("B", MORNING - ACTIVE_SECONDS + 60)
    assert (await store.snapshot("A", members, MORNING))["share"] == 25
    assert (await store.snapshot("A", members, MORNING + 61))["share"] == 50
    assert (await store.snapshot("A", {"A": LONG_AGO}, MORNING))["share"] == 50  # B revoked


async def test_past_its_share_a_key_is_held_for_the_others(make):
    store = make(1000, 4)
    members = {"A": MORNING, "B": MORNING}
    assert [await store.take("A", members, MORNING) for _ in range(2)] == [None, None]
    refusal = await store.take("A", members, MORNING)
    assert refusal is not None and refusal.reason == "share"
    assert (refusal.share, refusal.used_by_key, refusal.others) == (2, 2, 1)
    assert await store.take("B", members, MORNING) is None


async def test_following_openrouter_only_ever_raises_the_count(make):
    store = make(1000, 50)
    await store.follow(limit=1000, remaining=990, used=10, now=MORNING)
    assert (await store.snapshot(None, {}, MORNING))["account_remaining_today"] == 990
    await store.follow(limit=1000, remaining=995, used=5, now=MORNING)
    assert (await store.snapshot(None, {}, MORNING))["account_remaining_today"] == 990
