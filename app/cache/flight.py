"""Single-flight: identical concurrent misses make one upstream call (DESIGN §8).

The first request for a key leads: it makes the upstream call and, on a clean answer,
hands the entry to everyone who joined meanwhile (each served as `X-Cache: HIT`). A leader
that fails, finds nothing storable, is cancelled (its client left) or is dropped without
finishing does not fail its followers: they wake and one of them leads the next try.

Bounds, so nobody waits forever or behind a queue of failures:
- after `max_leaders` leaders of one key failed in a row, the followers still waiting stop
  coalescing and each makes its own call (so at most `max_leaders` serial tries);
- a follower waits at most `wait_timeout` seconds for a leader, then goes on its own;
- a leader ticket garbage-collected unfinished (e.g. a streaming body that never started)
  counts as a failed leader, so its followers wake.
Coalescing is per process; replicas sharing Redis still share stored answers.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType

from app.cache.store import Entry


class _Flight:
    """One leader's try for a key; followers wait on `done`."""

    __slots__ = ("done", "entry", "failures", "next")

    def __init__(self, failures: int) -> None:
        self.done = asyncio.Event()
        self.entry: Entry | None = None
        self.failures = failures  # leaders of this key that failed before this one
        self.next: _Flight | None = None  # the try that took over after this one failed


def _land(flights: dict[str, _Flight], key: str, flight: _Flight, entry: Entry | None) -> None:
    """End `flight` once: wake followers with `entry` (None: the leader failed)."""
    if flight.done.is_set():
        return
    if flights.get(key) is flight:
        del flights[key]
    flight.entry = entry
    flight.done.set()


class Ticket:
    """A request's place in a flight: the leader's entry (`entry`), or the duty to lead.

    A leading ticket must end with `finish(entry)` or `release()` (idempotent; `async with`
    releases on exit), ideally in the `finally` of whatever relays the answer.
    """

    __slots__ = ("__weakref__", "_finalizer", "_flight", "_key", "entry", "leading")

    def __init__(
        self,
        *,
        entry: Entry | None = None,
        lead: tuple[dict[str, _Flight], str, _Flight] | None = None,
    ) -> None:
        self.entry = entry  # set for a follower served the leader's answer: a HIT
        self.leading = entry is None  # True: make the call (coalesced or on its own)
        self._flight = lead
        self._finalizer = weakref.finalize(self, _land, *lead, None) if lead else None
        if self._finalizer is not None:
            self._finalizer.atexit = False  # at exit there is no loop left to wake anyone on

    def finish(self, entry: Entry | None) -> None:
        """The leader is done: `entry` is the clean answer for followers, None if there is none."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._flight is not None:
            _land(*self._flight, entry)
            self._flight = None

    def release(self) -> None:
        """End without an answer (error, abandoned, not storable); a follower leads next."""
        self.finish(None)

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Flights:
    """The flights in progress, by cache key."""

    def __init__(self, *, max_leaders: int = 3, wait_timeout: float | None = None) -> None:
        self.max_leaders = max_leaders
        self.wait_timeout = wait_timeout
        self.coalesced = 0  # followers served a leader's answer (hits not seen by the store)
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def join(self, key: str) -> Ticket:
        """Lead the call for `key`, or wait for the current leader and take its entry."""
        flight = self._flights.get(key)
        failed: _Flight | None = None
        while True:
            if flight is None:
                failures = 0 if failed is None else failed.failures + 1
                if failures >= self.max_leaders:
                    return Ticket()  # enough serial tries: on its own from now on
                flight = _Flight(failures)
                self._flights[key] = flight
                if failed is not None:
                    failed.next = flight
                return Ticket(lead=(self._flights, key, flight))
            try:
                await asyncio.wait_for(flight.done.wait(), self.wait_timeout)
            except TimeoutError:
                return Ticket()  # a leader this slow is not worth waiting for any longer
            if flight.entry is not None:
                self.coalesced += 1
                return Ticket(entry=flight.entry)
            # The leader failed. Follow whoever took over, even if it has finished already
            # (this follower may wake late), else take over.
            failed, flight = flight, flight.next or self._flights.get(key)

    async def run(
        self, key: str, call: Callable[[], Awaitable[Entry | None]]
    ) -> tuple[Entry | None, bool]:
        """`call` once for identical concurrent callers; (entry, True) for a follower's hit.

        `call` returns the entry to share, or None when its answer must not be shared (its
        own caller then relays it; the followers try again under a new leader).
        """
        ticket = await self.join(key)
        if ticket.entry is not None:
            return ticket.entry, True
        async with ticket:
            entry = await call()
            ticket.finish(entry)
            return entry, False
