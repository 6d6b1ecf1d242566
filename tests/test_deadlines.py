"""DeadlineReader: one timer per attempt, and the reading task is left healthy after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.upstream.deadlines import DeadlineReader

pytestmark = pytest.mark.anyio


async def chunks(*delays: float) -> AsyncIterator[bytes]:
    for i, delay in enumerate(delays):
        await asyncio.sleep(delay)
        yield b"%d" % i


def soon(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_reads_until_the_end_within_the_deadline():
    reader = DeadlineReader(chunks(0, 0.01, 0), soon(1))
    assert [await reader.next() for _ in range(4)] == [b"0", b"1", b"2", None]
    reader.close()


async def test_a_read_pending_at_the_deadline_raises_timeout_and_the_task_goes_on():
    reader = DeadlineReader(chunks(0, 5), soon(0.05))
    assert await reader.next() == b"0"
    with pytest.raises(TimeoutError):
        await reader.next()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # not cancelled again


async def test_a_deadline_passed_between_reads_raises_on_the_next_read():
    reader = DeadlineReader(chunks(0, 0), soon(0.02))
    assert await reader.next() == b"0"
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await reader.next()


async def test_extend_to_moves_the_deadline():
    reader = DeadlineReader(chunks(0.1), soon(0.05))
    reader.extend_to(soon(1))
    assert await reader.next() == b"0"
    reader.close()


async def test_an_outside_cancellation_is_not_mistaken_for_the_deadline():
    reader = DeadlineReader(chunks(5), soon(10))
    task = asyncio.ensure_future(reader.next())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reader.close()


async def test_touched_reads_outlive_the_idle_limit_and_a_silence_ends_them():
    reader = DeadlineReader(chunks(0.03, 0.03, 0.03, 0.2), soon(5))
    reader.limit_idle(0.08)
    for _ in range(3):  # each chunk comes within the limit of the previous one
        assert await reader.next() is not None
        reader.touch()
    with pytest.raises(TimeoutError):
        await reader.next()
    assert reader.idle_expired and not reader.stopped


async def test_without_touch_the_idle_limit_ends_even_a_busy_reader():
    """Keep-alive comments arrive but are not data: the relay does not touch for them."""
    reader = DeadlineReader(chunks(*[0.02] * 20), soon(5))
    reader.limit_idle(0.1)
    with pytest.raises(TimeoutError):
        while await reader.next() is not None:
            pass
    assert reader.idle_expired


async def test_stop_ends_a_pending_read_at_once():
    reader = DeadlineReader(chunks(5), soon(10))
    reader.limit_idle(5)
    task = asyncio.ensure_future(reader.next())
    await asyncio.sleep(0.01)
    reader.stop()
    with pytest.raises(TimeoutError):
        await task
    assert reader.stopped and not reader.idle_expired
