"""DeadlineReader: one timer per attempt, and the reading task is left healthy after it.

The reader runs on a `FakeTimers` clock that only moves when a test advances it, and reads
from a `Feed` the test fills chunk by chunk: no outcome depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from app.upstream.deadlines import DeadlineReader

pytestmark = pytest.mark.anyio
T = TypeVar("T")


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    """A clock at 0 that moves only on `advance`, firing the timers it passes in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, FakeTimer, Callable[[], object]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._due, (when, next(self._order), timer, callback))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on; timers armed by a callback fire too if they fall in the span."""
        end = self.now + seconds
        while self._due and self._due[0][0] <= end:
            when, _, timer, callback = heapq.heappop(self._due)
            if not timer.cancelled:
                self.now = max(self.now, when)
                callback()
        self.now = end


class Feed:
    """The body: chunks the test puts, and `pending()` to wait for a reader blocked on it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._getting = False

    def put(self, *chunks: bytes | None) -> None:
        for chunk in chunks:
            self._queue.put_nowait(chunk)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            self._getting = True
            chunk = await self._queue.get()
            self._getting = False
            if chunk is None:
                return
            yield chunk

    async def pending(self) -> None:
        """Until a reader waits on an empty feed: loop turns, not time."""
        for _ in range(100):
            if self._getting and self._queue.empty():
                return
            await asyncio.sleep(0)
        raise AssertionError("no reader is waiting on the feed")


async def settled(work: Coroutine[Any, Any, T] | asyncio.Task[T]) -> T:
    """Its outcome once the loop has run it: a read left blocked fails the test, no hang."""
    task = asyncio.ensure_future(work)
    for _ in range(100):
        if task.done():
            return task.result()
        await asyncio.sleep(0)
    task.cancel()
    raise AssertionError("the read is still pending")


@pytest.fixture
def timers() -> FakeTimers:
    return FakeTimers()


@pytest.fixture
def feed() -> Feed:
    return Feed()


async def test_reads_until_the_end_within_the_deadline(timers: FakeTimers, feed: Feed) -> None:
    reader = DeadlineReader(feed.chunks(), 10, timers)
    feed.put(b"0", b"1")
    assert await settled(reader.next()) == b"0"
    timers.advance(9.9)
    assert await settled(reader.next()) == b"1"
    feed.put(b"2", None)
    assert [await settled(reader.next()) for _ in range(2)] == [b"2", None]
    reader.close()


async def test_a_read_pending_at_the_deadline_raises_timeout_and_the_task_goes_on(
    timers: FakeTimers, feed: Feed
) -> None:
    reader = DeadlineReader(feed.chunks(), 5, timers)
    feed.put(b"0")
    assert await settled(reader.next()) == b"0"

    async def read_past_the_deadline() -> str:
        with pytest.raises(TimeoutError):
            await reader.next()
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0)  # the task is not cancelled again
        return "went on"

    reading = asyncio.create_task(read_past_the_deadline())
    await feed.pending()
    timers.advance(4.9)
    await asyncio.sleep(0)
    assert not reading.done()
    timers.advance(0.1)
    assert await settled(reading) == "went on"


async def test_a_deadline_passed_between_reads_raises_on_the_next_read(
    timers: FakeTimers, feed: Feed
) -> None:
    reader = DeadlineReader(feed.chunks(), 2, timers)
    feed.put(b"0", b"1")
    assert await settled(reader.next()) == b"0"
    timers.advance(2)
    with pytest.raises(TimeoutError):
        await settled(reader.next())  # even with a chunk ready


async def test_extend_to_moves_the_deadline(timers: FakeTimers, feed: Feed) -> None:
    reader = DeadlineReader(feed.chunks(), 5, timers)
    reader.extend_to(100)
    reading = asyncio.create_task(reader.next())
    await feed.pending()
    timers.advance(50)
    feed.put(b"0")
    assert await settled(reading) == b"0"
    timers.advance(50)
    feed.put(b"late")
    with pytest.raises(TimeoutError):
        await settled(reader.next())


async def test_extend_to_drops_the_idle_limit(timers: FakeTimers, feed: Feed) -> None:
    """After `[DONE]` the drain reads under a hard deadline only (the client's `drain`)."""
    reader = DeadlineReader(feed.chunks(), 50, timers)
    reader.limit_idle(5)
    reader.extend_to(100)
    reading = asyncio.create_task(reader.next())
    await feed.pending()
    timers.advance(99)
    feed.put(b"end")
    assert await settled(reading) == b"end"
    reader.close()


async def test_an_outside_cancellation_is_not_mistaken_for_the_deadline(
    timers: FakeTimers, feed: Feed
) -> None:
    reader = DeadlineReader(feed.chunks(), 10, timers)
    reading = asyncio.create_task(reader.next())
    await feed.pending()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settled(reading)
    reader.close()


async def test_touched_reads_outlive_the_idle_limit_and_a_silence_ends_them(
    timers: FakeTimers, feed: Feed
) -> None:
    reader = DeadlineReader(feed.chunks(), 50, timers)
    reader.limit_idle(8)
    for _ in range(3):  # 9 s in all, each chunk 3 s after the previous one
        timers.advance(3)
        feed.put(b"x")
        assert await settled(reader.next()) == b"x"
        reader.touch()
    reading = asyncio.create_task(reader.next())
    await feed.pending()
    timers.advance(7.9)
    await asyncio.sleep(0)
    assert not reading.done()
    timers.advance(0.1)  # 8 s since the last touch
    with pytest.raises(TimeoutError):
        await settled(reading)
    assert reader.idle_expired and not reader.stopped


async def test_without_touch_the_idle_limit_ends_even_a_busy_reader(
    timers: FakeTimers, feed: Feed
) -> None:
    """Keep-alive comments arrive but are not data: the relay does not touch for them."""
    reader = DeadlineReader(feed.chunks(), 50, timers)
    reader.limit_idle(10)
    read = 0
    with pytest.raises(TimeoutError):
        for _ in range(20):
            feed.put(b": keep-alive")
            await settled(reader.next())
            read += 1
            timers.advance(2)
    assert reader.idle_expired
    assert read == 5  # the sixth read comes at 10 s, the limit


async def test_the_hard_deadline_ends_an_idle_limited_reader_that_is_touched(
    timers: FakeTimers, feed: Feed
) -> None:
    reader = DeadlineReader(feed.chunks(), 10, timers)
    reader.limit_idle(8)
    with pytest.raises(TimeoutError):
        for _ in range(20):
            feed.put(b"data")
            await settled(reader.next())
            reader.touch()
            timers.advance(3)
    assert timers.now == 12 and not reader.idle_expired


async def test_stop_ends_a_pending_read_at_once(timers: FakeTimers, feed: Feed) -> None:
    reader = DeadlineReader(feed.chunks(), 10, timers)
    reader.limit_idle(5)
    reading = asyncio.create_task(reader.next())
    await feed.pending()
    reader.stop()
    with pytest.raises(TimeoutError):
        await settled(reading)
    assert reader.stopped and not reader.idle_expired


async def test_without_timers_the_reader_keeps_the_running_loops_time(feed: Feed) -> None:
    """The default clock is the event loop's: a body that never comes ends at `until`."""
    loop = asyncio.get_running_loop()
    reader = DeadlineReader(feed.chunks(), loop.time() + 0.01)
    reading = asyncio.create_task(reader.next())
    await asyncio.wait({reading}, timeout=10)  # a bound for a broken reader, not a margin
    with pytest.raises(TimeoutError):
        reading.result()
