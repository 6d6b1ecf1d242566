"""Single-flight: identical concurrent misses make one upstream call (DESIGN §8, §12).

The first request for a key leads: it makes the upstream call, and how that call ends is
how it ends for everyone who joined meanwhile. A clean answer is handed to each follower
(served as `X-Cache: HIT`); a failure is each follower's failure, so a call that failed is
not made again once per follower. A leader that ends with neither (its client left, its
answer may not be stored, its stream broke after the first content was relayed) or is
dropped without finishing does not fail its followers: they wake and one of them leads the
next try.

Bounds, so nobody waits longer than its own request would have taken:
- a follower waits at most the `wait` it joined with (what its own request could take, all
  hand-overs included), then gets TimeoutError;
- after `max_leaders` leaders of one key in a row ended with nothing, the followers still
  waiting stop coalescing and each makes its own call (so at most `max_leaders` serial tries);
- a leader lease garbage-collected unfinished (e.g. a streaming body that never started)
  counts as a leader that ended with nothing, so its followers wake.
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

    __slots__ = ("done", "entry", "failure", "next", "unanswered")

    def __init__(self, unanswered: int) -> None:
        self.done = asyncio.Event()
        self.entry: Entry | None = None
        self.failure: Exception | None = None
        self.unanswered = unanswered  # leaders of this key in a row that ended with nothing
        self.next: _Flight | None = None  # the try that took over after this one


def _land(
    flights: dict[str, _Flight],
    key: str,
    flight: _Flight,
    entry: Entry | None,
    failure: Exception | None = None,
) -> None:
    """End `flight` once: wake followers with `entry`, `failure`, or nothing (a new try)."""
    if flight.done.is_set():
        return
    if flights.get(key) is flight:
        del flights[key]
    flight.entry = entry
    flight.failure = failure
    flight.done.set()


class Lease:
    """A request's place in a flight: the leader's entry (`entry`) or failure (`failure`),
    or the duty to lead (`leading`).

    A leading lease must end with `finish(entry)`, `fail(error)` or `release()` (once;
    `async with` releases on exit), ideally in the `finally` of whatever relays the answer.
    """

    __slots__ = ("__weakref__", "_finalizer", "_flight", "entry", "failure", "leading")

    def __init__(
        self,
        *,
        entry: Entry | None = None,
        failure: Exception | None = None,
        lead: tuple[dict[str, _Flight], str, _Flight] | None = None,
    ) -> None:
        self.entry = entry  # set for a follower served the leader's answer: a HIT
        self.failure = failure  # set for a follower whose leader's call failed
        self.leading = entry is None and failure is None  # make the call (coalesced or alone)
        self._flight = lead
        self._finalizer = weakref.finalize(self, _land, *lead, None) if lead else None
        if self._finalizer is not None:
            self._finalizer.atexit = False  # at exit there is no loop left to wake anyone on

    def finish(self, entry: Entry | None, failure: Exception | None = None) -> None:
        """The leader is done: `entry` is the clean answer for followers, `failure` the
        error each of them answers instead; neither: a follower makes the next try."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._flight is not None:
            _land(*self._flight, entry, failure)
            self._flight = None

    def fail(self, failure: Exception) -> None:
        """The call failed: every follower fails the same way, with no call of its own."""
        self.finish(None, failure)

    def release(self) -> None:
        """End with nothing to share (the client left, not storable); a follower leads next."""
        self.finish(None)

    async def __aenter__(self) -> Lease:
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

    def __init__(self, *, max_leaders: int = 3) -> None:
        self.max_leaders = max_leaders
        self.coalesced = 0  # followers served a leader's answer (hits not seen by the store)
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def join(self, key: str, wait: float | None = None) -> Lease:
        """Lead the call for `key`, or follow the current leader and take its entry or its
        failure. A follower waits `wait` seconds at most, over every hand-over, then gets
        TimeoutError: its own request would have been over by then."""
        flight = self._flights.get(key)
        if flight is None:
            return self._lead(key, None)
        async with asyncio.timeout(wait):
            while True:
                await flight.done.wait()
                if flight.entry is not None:
                    self.coalesced += 1
                    return Lease(entry=flight.entry)
                if flight.failure is not None:
                    return Lease(failure=flight.failure)
                # The leader ended with nothing. Follow whoever took over, even if it has
                # finished already (this follower may wake late), else take over.
                ended = flight
                taken_over = flight.next or self._flights.get(key)
                if taken_over is None:
                    return self._lead(key, ended)
                flight = taken_over

    def _lead(self, key: str, ended: _Flight | None) -> Lease:
        """A lease to make the call: the flight's next leader, or on its own after
        `max_leaders` leaders in a row ended with nothing."""
        unanswered = 0 if ended is None else ended.unanswered + 1
        if unanswered >= self.max_leaders:
            return Lease()  # enough serial tries: on its own from now on
        flight = _Flight(unanswered)
        self._flights[key] = flight
        if ended is not None:
            ended.next = flight
        return Lease(lead=(self._flights, key, flight))

    async def run(
        self, key: str, call: Callable[[], Awaitable[Entry | None]]
    ) -> tuple[Entry | None, bool]:
        """`call` once for identical concurrent callers; (entry, True) for a follower's hit.

        `call` returns the entry to share, or None when its answer must not be shared (its
        own caller then relays it; the followers try again under a new leader). An error it
        raises is raised to every follower too.
        """
        lease = await self.join(key)
        if lease.entry is not None:
            return lease.entry, True
        if lease.failure is not None:
            raise lease.failure
        async with lease:
            try:
                entry = await call()
            except Exception as error:
                lease.fail(error)
                raise
            lease.finish(entry)
            return entry, False
