"""The in-process store keeps its measured size under PROXY_CACHE_MAX_MB and honours the TTL."""

from __future__ import annotations

import gc
import os
import tracemalloc

import pytest

from app.cache.store import Entry, MemoryCache

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(size: int, n: int = 0) -> Entry:
    return Entry(
        body=os.urandom(size),
        stream=False,
        model="meta-llama/llama-4-scout:free",
        created=1.7e9 + n,
        headers=(("x-generation-id", f"gen-1739458867-{n:020d}"),),
    )


async def test_filling_twice_the_bound_keeps_the_measured_size_under_it():
    cache = MemoryCache.from_mb(1, ttl=3600)  # PROXY_CACHE_MAX_MB=1
    written = 0
    n = 0
    while written < 2 * cache.max_bytes:
        entry = answer(3000 + (n * 7919) % 20000, n)
        assert await cache.put(f"k{n}", entry)
        written += entry.size
        n += 1
        assert (await cache.stats()).bytes <= cache.max_bytes
    stats = await cache.stats()
    assert stats.bytes == sum(e.size for e in cache._cache.values())
    assert stats.bytes > cache.max_bytes // 2  # it evicts as needed, not everything
    assert await cache.get(f"k{n - 1}") is not None  # the newest answers stay
    assert await cache.get("k0") is None  # the oldest went first


async def test_the_real_memory_held_stays_under_the_bound_for_many_small_answers():
    """Small answers are where the per-entry overhead dominates: the constant must cover it."""
    bound = 2 * 1024 * 1024
    cache = MemoryCache(bound, ttl=3600)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3 * bound // 900):
            await cache.put(os.urandom(32).hex(), answer(100, n))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert (await cache.stats()).entries > 1000
    assert held <= bound


async def test_an_answer_larger_than_the_bound_is_not_stored():
    cache = MemoryCache(50_000, ttl=60)
    assert await cache.put("small", answer(1000))
    assert not await cache.put("huge", answer(60_000))
    assert await cache.get("huge") is None
    assert await cache.get("small") is not None  # nothing was evicted for it


async def test_zero_megabytes_stores_nothing():
    cache = MemoryCache.from_mb(0, ttl=60)
    assert not await cache.put("k", answer(10))
    assert (await cache.stats()).entries == 0


async def test_entries_expire_after_the_ttl_on_the_injected_clock():
    clock = Clock()
    cache = MemoryCache(10_000_000, ttl=3600, clock=clock)
    await cache.put("k", answer(100))
    clock.now += 3599
    assert await cache.get("k") is not None
    clock.now += 2
    assert await cache.get("k") is None
    assert (await cache.stats()).entries == 0
    assert (await cache.stats()).bytes == 0


async def test_stats_count_hits_misses_entries_and_bytes():
    cache = MemoryCache(10_000_000, ttl=60)
    entry = answer(500)
    await cache.put("k", entry)
    await cache.get("k")
    await cache.get("k")
    await cache.get("other")
    stats = await cache.stats()
    assert (stats.entries, stats.bytes, stats.hits, stats.misses) == (1, entry.size, 2, 1)


async def test_putting_the_same_key_again_replaces_the_answer():
    cache = MemoryCache(10_000_000, ttl=60)
    await cache.put("k", answer(100, 1))
    newer = answer(200, 2)
    await cache.put("k", newer)
    assert await cache.get("k") == newer
    assert (await cache.stats()).bytes == newer.size
