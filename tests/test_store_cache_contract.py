"""The `CacheStore` contract (DESIGN §8, §12): every implementation keeps these promises.
A shared (Redis) store joins by adding one line to `IMPLEMENTATIONS`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from app.cache.store import CacheStore, Entry, MemoryCache
from app.shared.cache import RedisCache
from app.shared.connection import Shared
from tests.redis_server import shared_for

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


IMPLEMENTATIONS: dict[str, Callable[[Shared, int, float, Clock], CacheStore]] = {
    "memory": lambda _, max_bytes, ttl, clock: MemoryCache(max_bytes, ttl, clock),
    "redis": RedisCache,
}
TTL = 60.0


def entry(size: int, n: int = 0) -> Entry:
    return Entry(b"x" * size, False, "a/model", float(n), (("x-generation-id", f"gen-{n}"),))


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[int, Clock], CacheStore]]:
    async with shared_for(request) as shared:
        yield lambda max_bytes, clock: IMPLEMENTATIONS[request.param](shared, max_bytes, TTL, clock)


async def test_what_is_put_is_got_and_every_lookup_is_counted(make):
    store = make(1 << 20, Clock())
    assert await store.get("k") is None
    assert await store.put("k", entry(100)) is True
    assert await store.get("k") == entry(100)
    stats = await store.stats()
    assert (stats.entries, stats.bytes, stats.hits, stats.misses) == (1, entry(100).size, 1, 1)


async def test_the_measured_total_never_exceeds_the_bound(make):
    bound = 20 * entry(1000).size
    store = make(bound, Clock())
    for n in range(100):
        assert await store.put(f"k{n}", entry(1000, n)) is True
        assert (await store.stats()).bytes <= bound
    assert await store.get("k99") is not None  # the newest stays, the oldest went
    assert await store.get("k0") is None


async def test_an_entry_larger_than_the_bound_is_refused(make):
    store = make(1000, Clock())
    assert await store.put("k", entry(5000)) is False
    assert (await store.stats()).entries == 0


async def test_entries_expire_after_the_ttl(make):
    clock = Clock()
    store = make(1 << 20, clock)
    await store.put("k", entry(10))
    clock.now += TTL + 1
    assert await store.get("k") is None
    assert (await store.stats()).entries == 0
