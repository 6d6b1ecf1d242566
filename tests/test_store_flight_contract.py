"""The `FlightLeases` contract (DESIGN §12): single-flight leases across replicas keep these
promises in memory and in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from app.cache.flight import ELSEWHERE, STORED, FlightLeases, MemoryLeases
from app.shared.flights import RedisLeases
from tests.redis_server import shared_for

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], FlightLeases]]:
    """Each call is one replica's view: Redis clients on one server, or (memory, within
    one process) the same store."""
    async with shared_for(request) as shared:
        if request.param == "memory":
            leases = MemoryLeases()
            yield lambda: leases
        else:
            yield lambda: RedisLeases(shared)


async def test_one_taker_leads_and_the_others_see_it_held(make):
    one, other = make(), make()  # two replicas on one store
    token = await one.take("k", 10)
    assert token not in (STORED, ELSEWHERE)
    assert await other.take("k", 10) == ELSEWHERE
    assert await other.state("k") == ELSEWHERE
    assert await other.state("another key") is None


async def test_a_stored_answer_is_announced_and_a_failure_frees_the_lease(make):
    one, other = make(), make()
    await one.end("k", await one.take("k", 10), stored=True)
    assert await other.state("k") == STORED
    assert await other.take("k", 10) == STORED
    await one.end("j", await one.take("j", 10), stored=False)
    assert await other.state("j") is None
    assert await other.take("j", 10) not in (STORED, ELSEWHERE)


async def test_a_lease_of_a_dead_leader_expires_and_its_late_end_changes_nothing(make):
    one, other = make(), make()
    stale = await one.take("k", 0.05)
    await anyio.sleep(0.1)
    fresh = await other.take("k", 10)
    assert fresh not in (STORED, ELSEWHERE)
    await one.end("k", stale, stored=False)  # the old leader comes back too late
    assert await one.state("k") == ELSEWHERE
