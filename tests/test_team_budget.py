"""The account's free allowance and its fair share among keys, with an injected clock."""

from __future__ import annotations

import asyncio
import calendar

import pytest

from app.errors import UpstreamUnreachable
from app.free_tier import spends_allowance
from app.team.budget import (
    BudgetView,
    MemoryBudget,
    allowance_message,
    free_daily,
    refresh,
    refresh_once,
)
from app.team.fair_share import BudgetRefusal

pytestmark = pytest.mark.anyio

FREE = "meta-llama/llama-4-scout:free"
MORNING = float(calendar.timegm((2025, 6, 1, 8, 0, 0)))
EVENING = float(calendar.timegm((2025, 6, 1, 20, 0, 0)))  # the last 4 hours begin
MIDNIGHT = float(calendar.timegm((2025, 6, 2, 0, 0, 0)))


def keys(*names: str) -> tuple[str, ...]:
    return names


class Budget:
    """The store under test, asked as the gate asks it: about a key ring whose `active_keys`
    were all created this morning (so each counts as active all day)."""

    def __init__(self, rpm: int, rpd: int, active_keys: tuple[str, ...] = ()) -> None:
        self.store = MemoryBudget(rpm=rpm, rpd=rpd)
        self.members = dict.fromkeys(active_keys, MORNING - 3600)

    async def try_spend(self, key: str | None, model: str, now: float) -> float | None:
        if not spends_allowance(model):
            return None
        refusal = await self.store.take(key, self.members, now)
        return None if refusal is None else refusal.until

    async def take(self, key: str | None, now: float) -> BudgetRefusal | None:
        return await self.store.take(key, self.members, now)

    async def follow(self, limit: int, remaining: int, used: int, now: float) -> None:
        await self.store.follow(limit, remaining, used, now)

    async def snapshot(self, key: str | None, now: float) -> BudgetView:
        return await self.store.snapshot(key, self.members, now)


async def served(budget: Budget, key: str | None, count: int, start: float, step: float = 1) -> int:
    """Send `count` attempts `step` seconds apart; how many the budget let through."""
    ok = 0
    for i in range(count):
        if await budget.try_spend(key, FREE, start + i * step) is None:
            ok += 1
    return ok


async def test_per_minute_allowance_is_a_sliding_window():
    budget = Budget(rpm=3, rpd=100)
    for offset in (0, 10, 20):
        assert await budget.try_spend(None, FREE, MORNING + offset) is None
    assert await budget.try_spend(None, FREE, MORNING + 30) == MORNING + 60
    assert await budget.try_spend(None, FREE, MORNING + 60) is None
    assert await budget.try_spend(None, FREE, MORNING + 61) == MORNING + 70


async def test_daily_allowance_resets_at_midnight_utc():
    budget = Budget(rpm=100, rpd=2)
    assert await served(budget, None, 2, MORNING) == 2
    assert await budget.try_spend(None, FREE, MORNING + 5) == MIDNIGHT
    # A refused attempt is not sent, so it is not counted.
    assert (await budget.snapshot(None, MORNING + 5))["used_by_key"] == 2
    assert await budget.try_spend(None, FREE, MIDNIGHT) is None


@pytest.mark.parametrize(
    ("model", "counts"),
    [
        (FREE, True),
        ("openrouter/free", True),  # zero-priced router over free models: same counter
        ("openrouter/optimus-alpha", False),  # zero-priced, no :free suffix
        ("openai/gpt-4o", False),
    ],
)
async def test_only_free_tier_ids_spend_the_allowance(model, counts):
    budget = Budget(rpm=100, rpd=1)
    assert await budget.try_spend("a", model, MORNING) is None
    remaining = (await budget.snapshot("a", MORNING))["account_remaining_today"]
    assert remaining == (0 if counts else 1)


async def test_open_mode_is_one_pool():
    budget = Budget(rpm=1000, rpd=50)
    assert await served(budget, None, 60, MORNING) == 50
    assert await budget.snapshot(None, MORNING) == {
        "share": 50,
        "used_by_key": 50,
        "account_limit_today": 50,
        "account_remaining_today": 0,
        "resets_at": MIDNIGHT,
    }


async def test_a_greedy_key_cannot_starve_the_others():
    """DESIGN §7: budget 50, A sends 100 first, then B and C 10 each."""
    budget = Budget(rpm=1000, rpd=50, active_keys=keys("A", "B", "C"))
    a = await served(budget, "A", 100, MORNING)
    b = await served(budget, "B", 10, MORNING + 200)
    c = await served(budget, "C", 10, MORNING + 300)
    assert (b, c) == (10, 10)
    assert a <= 50 - 20
    snapshot = await budget.snapshot("A", MORNING + 400)
    assert snapshot["share"] == 16
    assert snapshot["used_by_key"] == a
    assert snapshot["account_remaining_today"] == 50 - a - 20


async def test_reserves_are_released_over_the_last_four_hours():
    budget = Budget(rpm=1000, rpd=50, active_keys=keys("A", "B", "C"))
    a = await served(budget, "A", 100, MORNING)
    await served(budget, "B", 10, MORNING + 200)
    await served(budget, "C", 10, MORNING + 300)
    left = 50 - a - 20
    # Before the last 4 hours B's and C's unused shares are held for them...
    assert await served(budget, "A", 10, EVENING - 100) == 0
    # ...half of them at 22:00...
    assert await served(budget, "A", 50, EVENING + 2 * 3600, step=0) == left - 6
    # ...and by the end of the day nothing is left unused for keys that never came.
    assert await served(budget, "A", 50, MIDNIGHT - 60) == 6
    assert (await budget.snapshot("A", MIDNIGHT - 1))["account_remaining_today"] == 0


async def test_a_key_that_never_came_is_protected_until_the_reserve_runs_out():
    budget = Budget(rpm=1000, rpd=50, active_keys=keys("A", "B", "C"))
    a = await served(budget, "A", 100, MORNING)
    until = await budget.try_spend("A", FREE, MORNING + 500)
    assert until is not None and EVENING <= until < MIDNIGHT
    # B, which has sent nothing today, still gets its whole share.
    assert await served(budget, "B", 16, MORNING + 600) == 16
    # A's refusal named the moment it may go on: then it is served.
    budget = Budget(rpm=1000, rpd=50, active_keys=keys("A", "B", "C"))
    assert await served(budget, "A", 100, MORNING) == a
    until = await budget.try_spend("A", FREE, MORNING + 500)
    assert until is not None
    assert await budget.try_spend("A", FREE, until - 1) is not None
    assert await budget.try_spend("A", FREE, until) is None


async def test_the_caller_counts_even_if_the_active_list_has_not_caught_up():
    budget = Budget(rpm=1000, rpd=50, active_keys=keys("A"))
    assert (await budget.snapshot("new", MORNING))["share"] == 25
    assert await served(budget, "A", 50, MORNING) == 50  # A alone while "new" never spent


async def test_following_openrouter_counts_calls_made_elsewhere():
    budget = Budget(rpm=1000, rpd=50)
    await budget.follow(limit=1000, remaining=990, used=10, now=MORNING)
    assert await served(budget, None, 5, MORNING) == 5
    snapshot = await budget.snapshot(None, MORNING + 10)
    assert (snapshot["account_limit_today"], snapshot["account_remaining_today"]) == (1000, 985)
    # A report that lags the proxy's own five calls lowers nothing.
    await budget.follow(limit=1000, remaining=990, used=10, now=MORNING + 20)
    assert (await budget.snapshot(None, MORNING + 20))["account_remaining_today"] == 985
    # Calls made outside the proxy meanwhile do count.
    await budget.follow(limit=1000, remaining=900, used=100, now=MORNING + 30)
    assert (await budget.snapshot(None, MORNING + 30))["account_remaining_today"] == 900


async def test_a_followed_allowance_that_is_spent_refuses_until_midnight():
    budget = Budget(rpm=1000, rpd=1000)
    await budget.follow(limit=50, remaining=0, used=50, now=MORNING)
    assert await budget.try_spend(None, FREE, MORNING) == MIDNIGHT
    # The next day starts from zero with the followed limit.
    assert await served(budget, None, 60, MIDNIGHT) == 50


async def test_refusal_explains_without_counting():
    budget = Budget(rpm=2, rpd=50, active_keys=keys("A", "B"))
    await served(budget, "A", 2, MORNING)
    refusal = await budget.take("A", MORNING + 2)
    assert refusal == BudgetRefusal("minute", MORNING + 60, 2)
    assert (await budget.snapshot("A", MORNING + 2))["used_by_key"] == 2


async def test_messages_name_the_allowance_and_its_reset():
    day = allowance_message(BudgetRefusal("day", MIDNIGHT, 50), MIDNIGHT - 3723)
    assert "free-model allowance of 50 requests per day" in day
    assert "resets at 00:00 UTC (in 1h2m3s)" in day
    minute = allowance_message(BudgetRefusal("minute", MORNING + 12, 20), MORNING)
    assert "20 requests per minute" in minute
    assert "08:00:12 UTC (in 12s)" in minute
    share = allowance_message(
        BudgetRefusal("share", EVENING, 50, share=16, used_by_key=18, others=2), MORNING, "A"
    )
    assert "Key 'A' has used 18 of the account's 50" in share
    assert "fair share being 16" in share
    assert "2 other key(s) until 20:00:00 UTC (in 12h0m0s)" in share


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"free_model_daily_requests": {"limit": 50, "remaining": 40, "used": 10}}, (50, 40, 10)),
        (
            {"data": {"free_model_daily_requests": {"limit": 1000, "remaining": 1, "used": 999}}},
            (1000, 1, 999),
        ),
        ({"label": "sk-or-v1-…", "limit": None}, None),  # older /key answers lack it
        ({"free_model_daily_requests": {"limit": 50, "remaining": -1, "used": 10}}, None),
        ({"free_model_daily_requests": {"limit": True, "remaining": 1, "used": 1}}, None),
        ({"free_model_daily_requests": None}, None),
    ],
)
async def test_free_daily_reads_get_key(info, expected):
    assert free_daily(info) == expected


async def test_refresh_follows_get_key_and_survives_failures():
    budget = Budget(rpm=1000, rpd=50)
    answers: list[object] = [
        UpstreamUnreachable("connection refused"),
        {"free_model_daily_requests": {"limit": 1000, "remaining": 700, "used": 300}},
    ]
    sleeps: list[float] = []

    async def fetch():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await refresh(budget.store, fetch, lambda: MORNING, every=120, sleep=sleep)
    assert sleeps == [120, 120]
    snapshot = await budget.snapshot(None, MORNING)
    assert (snapshot["account_limit_today"], snapshot["account_remaining_today"]) == (1000, 700)


async def test_refresh_once_without_the_field_changes_nothing():
    budget = Budget(rpm=1000, rpd=50)

    async def fetch():
        return {"label": "x"}

    assert await refresh_once(budget.store, fetch, MORNING) is False
    assert (await budget.snapshot(None, MORNING))["account_limit_today"] == 50


async def test_fifty_concurrent_attempts_against_rpm_10_spend_exactly_10():
    budget = Budget(rpm=10, rpd=1000, active_keys=keys("A"))

    async def one() -> float | None:
        await asyncio.sleep(0)
        return await budget.try_spend("A", FREE, MORNING)

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert results.count(None) == 10
