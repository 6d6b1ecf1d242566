"""The `CooldownStore` contract (DESIGN §1): every implementation keeps these promises.
A shared (Redis) store joins by adding one line to `IMPLEMENTATIONS`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from app.routing.cooldowns import CooldownStore, MemoryCooldowns
from app.routing.ranking import rank
from app.shared.connection import Shared
from app.shared.cooldowns import RedisCooldowns
from tests.redis_server import shared_for

pytestmark = pytest.mark.anyio
NOW = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


IMPLEMENTATIONS: dict[str, Callable[[Clock, Shared], CooldownStore]] = {
    "memory": lambda clock, _: MemoryCooldowns(clock),
    "redis": lambda clock, shared: RedisCooldowns(shared, clock),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def clock_and_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Clock, CooldownStore]]:
    clock = Clock()
    async with shared_for(request) as shared:
        yield clock, IMPLEMENTATIONS[request.param](clock, shared)


async def test_nothing_is_known_of_a_fresh_store(clock_and_store):
    clock, store = clock_and_store
    states = await store.snapshot(["a/one", "b/two:free"], clock.now)
    assert (states.cooling, states.failing, states.latency) == ({}, set(), {})


async def test_a_cooldown_lasts_until_its_time_and_never_shrinks(clock_and_store):
    clock, store = clock_and_store
    await store.cool("a/one", NOW + 60)
    await store.cool("a/one", NOW + 10)  # an earlier reset never shortens the longer one
    assert (await store.snapshot(["a/one", "a/two"], NOW)).cooling == {"a/one": NOW + 60}
    clock.now = NOW + 61
    assert (await store.snapshot(["a/one"], clock.now)).cooling == {}


async def test_the_free_tier_cools_every_free_variant_and_nothing_else(clock_and_store):
    clock, store = clock_and_store
    await store.cool_free_tier(NOW + 30)
    states = await store.snapshot(["a/one:free", "b/two:free", "c/paid"], NOW)
    assert states.cooling == {"a/one:free": NOW + 30, "b/two:free": NOW + 30}


async def test_a_failing_mark_orders_last_until_it_ends_or_the_model_answers(clock_and_store):
    clock, store = clock_and_store
    await store.mark_failing("a/one", NOW + 15)
    await store.mark_failing("a/two", NOW + 15)
    states = await store.snapshot(["a/one", "a/two", "a/three"], NOW)
    assert states.failing == {"a/one", "a/two"}
    assert states.cooling == {}  # failing is never skipped, only tried after the others
    await store.succeeded("a/two", 0.3)
    clock.now = NOW + 1
    assert (await store.snapshot(["a/one", "a/two"], clock.now)).failing == {"a/one"}
    clock.now = NOW + 16
    assert (await store.snapshot(["a/one"], clock.now)).failing == set()


async def test_rate_limits_count_up_until_a_success(clock_and_store):
    _, store = clock_and_store
    assert [await store.failed("a/one") for _ in range(3)] == [1, 2, 3]
    await store.succeeded("a/one", None)
    assert await store.failed("a/one") == 1


async def test_latency_is_remembered_only_when_given_and_ranks_fastest_first(clock_and_store):
    clock, store = clock_and_store
    await store.succeeded("a/slow", 2.0)
    await store.succeeded("a/fast", 0.1)
    await store.succeeded("a/unranked", None)
    models = ["a/unranked", "a/slow", "a/fast"]
    states = await store.snapshot(models, clock.now)
    assert set(states.latency) == {"a/slow", "a/fast"}
    assert rank(models, states) == ["a/fast", "a/slow", "a/unranked"]
