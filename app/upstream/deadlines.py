"""Per-attempt deadlines (DESIGN §5): connect, first byte, total; keep-alives extend none.

Reading a body chunk by chunk under `asyncio.timeout_at` costs a timer, a heap push and two
context switches per chunk: a fifth of a relayed stream's CPU. `DeadlineReader` keeps one
timer per attempt instead and cancels the reading task only if it fires while a read is
pending, the same protocol as `asyncio.timeout` (cancel, then `uncancel` into TimeoutError).
The stream idle limit rides the same timer: `touch()` only records the time, and the timer
re-arms itself when it fires early, so a relayed chunk costs no timer work.

The timer and the time come from a `Timers` (the running loop by default), so that tests
drive a deadline with a clock of their own instead of waiting for real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from app.config import Settings


class Timer(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """The clock a reader reads and sets its one timer on; an event loop is one."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer: ...


@dataclass(frozen=True, slots=True)
class Deadline:
    """Per-attempt limits in event-loop time."""

    first_byte: float
    total: float

    @classmethod
    def start(cls, settings: Settings, first_byte_timeout: float | None = None) -> Deadline:
        now = asyncio.get_running_loop().time()
        total = now + settings.total_timeout
        first_byte = first_byte_timeout or settings.first_byte_timeout
        return cls(first_byte=min(now + first_byte, total), total=total)


class DeadlineReader:
    """Chunks from `chunks` until `until` (on `timers`, the running loop unless given);
    raises TimeoutError once it has passed."""

    __slots__ = (
        "_chunks",
        "_timers",
        "_until",
        "_hard",
        "_timer",
        "_expired",
        "_reader",
        "_idle",
        "_last",
        "idle_expired",
        "stopped",
    )

    def __init__(
        self, chunks: AsyncIterator[bytes], until: float, timers: Timers | None = None
    ) -> None:
        self._chunks = chunks
        self._timers = timers or asyncio.get_running_loop()
        self._until = self._hard = until
        self._expired = False
        self._reader: asyncio.Task[object] | None = None  # the task blocked in next()
        self._idle: float | None = None
        self._last = 0.0
        self.idle_expired = False  # the idle limit, not the deadline, ended the reading
        self.stopped = False  # `stop()` ended the reading (server shutdown)
        self._timer = self._timers.call_at(until, self._expire)

    def extend_to(self, until: float) -> None:
        """Move the deadline (first byte seen: from the first-byte to the total limit).
        A hard deadline: any idle limit is dropped."""
        self._idle = None
        self._hard = until
        self._arm(until)

    def limit_idle(self, seconds: float) -> None:
        """Also end the reading when `touch()` was not called for `seconds`."""
        self._idle = seconds
        self._last = self._timers.time()
        self._arm(min(self._last + seconds, self._hard))

    def touch(self) -> None:
        """Data arrived: the idle limit counts from now."""
        self._last = self._timers.time()

    def stop(self) -> None:
        """End the reading now, as a deadline would (server shutdown)."""
        self.stopped = True
        self._timer.cancel()
        self._expire()

    def _arm(self, until: float) -> None:
        if until != self._until and not self._expired:
            self._timer.cancel()
            self._until = until
            self._timer = self._timers.call_at(until, self._expire)

    def _expire(self) -> None:
        if self._idle is not None and not self.stopped and self._until < self._hard:
            idle_end = self._last + self._idle
            if idle_end > self._timers.time():  # data came meanwhile: wait the rest
                self._arm(min(idle_end, self._hard))
                return
            self.idle_expired = True
        self._expired = True
        if self._reader is not None:
            self._reader.cancel()

    async def next(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        if self._expired:
            raise TimeoutError
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._reader = task
        try:
            return await anext(self._chunks, None)
        except asyncio.CancelledError:
            if self._expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._reader = None

    def close(self) -> None:
        self._timer.cancel()
