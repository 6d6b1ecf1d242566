"""Per-model state is bounded (DESIGN §6): marks expire, maps are capped, so a flood of
distinct model ids cannot grow the process."""

from __future__ import annotations

import tracemalloc

import pytest

from app.routing.cooldowns import (
    FAILING_SECONDS,
    HEALTH_SECONDS,
    MAX_TRACKED_MODELS,
    MemoryCooldowns,
)
from app.routing.ranking import rank

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_40000_distinct_ids_leave_nothing_behind_once_expired():
    clock = Clock()
    tracemalloc.start()
    try:
        store = MemoryCooldowns(clock)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40_000):
            model = f"acme/model-{i}"
            await store.failed(model)
            await store.cool(model, clock.now + 15)
            await store.mark_failing(model, clock.now + FAILING_SECONDS)
            await store.succeeded(f"acme/served-{i}", 0.5)
        assert len(store) <= 3 * MAX_TRACKED_MODELS  # capped even before anything expires
        clock.now += HEALTH_SECONDS + 1
        assert len(store) == 0
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * MIB


async def test_marks_last_as_long_as_they_say():
    clock = Clock()
    store = MemoryCooldowns(clock)
    await store.cool("a/limited", clock.now + 60)
    await store.mark_failing("a/failing", clock.now + FAILING_SECONDS)

    states = await store.snapshot(["a/limited", "a/failing"], clock.now)
    assert states.cooling == {"a/limited": clock.now + 60}
    assert states.failing == {"a/failing"}
    ranked = rank(
        ["a/failing", "a/other"], await store.snapshot(["a/failing", "a/other"], clock.now)
    )
    assert ranked[-1] == "a/failing"

    clock.now += FAILING_SECONDS + 1  # a recovered model is back at its place
    assert (await store.snapshot(["a/failing"], clock.now)).failing == set()
    states = await store.snapshot(["a/failing", "a/other"], clock.now)
    assert rank(["a/failing", "a/other"], states) == ["a/failing", "a/other"]
    assert (await store.snapshot(["a/limited"], clock.now)).cooling == {"a/limited": clock.now + 44}
