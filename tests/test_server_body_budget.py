"""The body budget's rules (app/body_budget.py): who waits, who is admitted, and that no
byte is lost when a waiter gives up."""

from __future__ import annotations

import asyncio

import pytest

from app.body_budget import SMALL, BodyBudget
from app.errors import ProxyOutOfResources

pytestmark = pytest.mark.anyio


async def test_a_lone_body_larger_than_the_budget_is_admitted():
    budget = BodyBudget(1000 * SMALL)
    assert await budget.take(5000 * SMALL, wait=0) == 1000 * SMALL


async def test_small_bodies_never_wait_and_large_ones_wait_for_them():
    budget = BodyBudget(4 * SMALL)
    held = await budget.take(3 * SMALL, wait=1)
    small = await budget.take(SMALL, wait=0)  # no room left: admitted all the same
    waiting = asyncio.ensure_future(budget.take(2 * SMALL, wait=10))
    await asyncio.sleep(0)
    assert not waiting.done()
    budget.give(held)
    budget.give(small)
    assert await waiting == 2 * SMALL


async def test_a_wait_past_its_deadline_is_a_503_and_holds_nothing():
    budget = BodyBudget(4 * SMALL)
    held = await budget.take(3 * SMALL, wait=1)
    with pytest.raises(ProxyOutOfResources) as refused:
        await budget.take(2 * SMALL, wait=0.01)
    assert refused.value.status_code == 503
    budget.give(held)
    assert budget.used == 0


async def test_a_cancelled_waiter_lets_the_next_one_in():
    budget = BodyBudget(4 * SMALL)
    held = await budget.take(2 * SMALL, wait=1)
    first = asyncio.ensure_future(budget.take(4 * SMALL, wait=10))
    second = asyncio.ensure_future(budget.take(SMALL + 1, wait=10))  # behind `first`
    await asyncio.sleep(0)
    first.cancel()  # the client went away
    await asyncio.sleep(0)
    assert await second == SMALL + 1
    budget.give(held)
    budget.give(SMALL + 1)
    assert budget.used == 0
