"""The `QuotaStore` contract (DESIGN §1, §12): every implementation keeps these promises.
A shared (Redis) store joins by adding one line to `IMPLEMENTATIONS`."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from app.errors import QuotaExceeded
from app.shared.connection import Shared
from app.shared.quotas import RedisQuotas
from app.team.quotas import Grant, MemoryQuotas, QuotaStore
from tests.redis_server import shared_for

pytestmark = pytest.mark.anyio
MORNING = float(calendar.timegm((2026, 3, 10, 8, 0, 0)))
MIDNIGHT = float(calendar.timegm((2026, 3, 11, 0, 0, 0)))

IMPLEMENTATIONS: dict[str, Callable[[Callable[[], float], Shared], QuotaStore]] = {
    "memory": lambda clock, _: MemoryQuotas(clock),
    "redis": lambda clock, shared: RedisQuotas(shared, clock),
}


@dataclass(frozen=True)
class Key:
    name: str = "alice"
    rpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    concurrency: int | None = None
    models: tuple[str, ...] = ()
    paid: bool = False


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
    async with shared_for(request) as shared:
        yield IMPLEMENTATIONS[request.param](lambda: MORNING, shared)


async def test_admit_counts_and_reports_the_counts_with_this_request_in_them(store):
    key = Key(rpm=5, rpd=10, concurrency=2)
    grant = await store.admit(key, MORNING)
    assert grant.lease is not None
    assert grant.views["rpm"] == {"limit": 5, "used": 1, "remaining": 4, "resets_at": MORNING + 60}
    assert grant.views["concurrency"] == {"limit": 2, "used": 1, "remaining": 1, "resets_at": None}
    assert await store.snapshot(key, MORNING) == grant.views


async def test_a_refusal_counts_toward_nothing(store):
    key = Key(rpm=1, rpd=5)
    await store.admit(key, MORNING)
    for _ in range(3):
        with pytest.raises(QuotaExceeded):
            await store.admit(key, MORNING + 1)
    rpd = (await store.snapshot(key, MORNING + 1))["rpd"]
    assert rpd is not None and rpd["used"] == 1


async def test_check_and_count_are_one_step_under_concurrent_admits(store):
    key = Key(rpm=10, concurrency=100)
    start = asyncio.Event()

    async def one() -> Grant:
        await start.wait()  # fire all 50 through one barrier
        return await store.admit(key, MORNING)

    tasks = [asyncio.ensure_future(one()) for _ in range(50)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, Grant) for r in results) == 10
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 40


async def test_a_lease_frees_one_slot_once(store):
    key = Key(concurrency=1)
    grant = await store.admit(key, MORNING)
    with pytest.raises(QuotaExceeded) as refused:
        await store.admit(key, MORNING)
    assert refused.value.limit == "concurrency"
    assert grant.lease is not None
    await store.release(key, grant.lease)
    await store.release(key, grant.lease)  # handed back twice: still one slot
    second = await store.admit(key, MORNING)
    with pytest.raises(QuotaExceeded):
        await store.admit(key, MORNING)
    assert second.lease != grant.lease


async def test_tokens_count_toward_tpd_until_midnight(store):
    key = Key(tpd=100)
    await store.admit(key, MORNING)
    await store.add_tokens(key, 100, MORNING)
    with pytest.raises(QuotaExceeded) as refused:
        await store.admit(key, MORNING + 1)
    assert refused.value.limit == "tpd"
    await store.admit(key, MIDNIGHT)


async def test_seeded_counts_hold_for_the_day(store):
    key = Key(rpd=3, tpd=100)
    await store.seed("alice", requests=3, tokens=40, now=MORNING)
    with pytest.raises(QuotaExceeded) as refused:
        await store.admit(key, MORNING)
    assert refused.value.limit == "rpd"
    tpd = (await store.snapshot(key, MORNING))["tpd"]
    assert tpd is not None and tpd["used"] == 40


async def test_open_mode_and_unlimited_keys_take_nothing(store):
    for key in (None, Key()):
        grant = await store.admit(key, MORNING)
        assert grant.lease is None
        assert set(grant.views.values()) == {None}


async def test_keys_are_counted_apart(store):
    await store.admit(Key(name="alice", rpm=1), MORNING)
    await store.admit(Key(name="bob", rpm=1), MORNING)
    with pytest.raises(QuotaExceeded) as refused:
        await store.admit(Key(name="bob", rpm=1), MORNING)
    assert refused.value.key_name == "bob"


async def test_an_admission_on_redis_never_carries_the_whole_minute_back(redis_url):
    """The reply of one admission is a few numbers, however many requests the sliding
    minute holds: the proxy parses every byte of it on the request's path (issue 25)."""
    shared = Shared(redis_url, "orp:")
    try:
        store, key = RedisQuotas(shared, lambda: MORNING), Key(rpm=1_000_000)
        for n in range(2000):
            await store.admit(key, MORNING + n / 100)
        before = await shared.client.info("stats")
        grant = await store.admit(key, MORNING + 20.5)
        after = await shared.client.info("stats")
    finally:
        await shared.aclose()
    assert grant.views["rpm"] == {
        "limit": 1_000_000, "used": 2001, "remaining": 1_000_000 - 2001,
        "resets_at": MORNING + 20.5 + 60,
    }  # fmt: skip
    # The admission's reply and the INFO reply that measures it (~1.5 KB, not growing).
    assert after["total_net_output_bytes"] - before["total_net_output_bytes"] < 4000
