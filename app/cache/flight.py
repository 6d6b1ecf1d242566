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
Across replicas sharing Redis, `FlightLeases` (below) coalesces each process's leaders.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol

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


# Cross-replica single-flight (DESIGN §12): a lease per cache key in a store every replica
# sees. The replica that takes it makes the call; the others poll it until it says the answer
# is stored (a HIT from the shared cache), or until it is gone with nothing stored (then one
# of them takes it). `Flights` above still coalesces within a process, so only each
# process's leader asks here.
STORED = "stored"  # the lease's value once its leader stored the answer
ELSEWHERE = ""  # `take`: another replica leads
STORED_SECONDS = 2.0  # how long `STORED` stays, for a waiter that missed just before the put


class FlightLeases(Protocol):
    """One lease per cache key across replicas; each lease expires after `seconds`, so a
    dead replica's lease lapses no later than its own attempt would have ended."""

    async def take(self, key: str, seconds: float) -> str:
        """A fresh token: this caller leads; `STORED`: the answer is in the cache;
        `ELSEWHERE`: someone else leads."""

    async def state(self, key: str) -> str | None:
        """`STORED`, `ELSEWHERE` (a leader is at work) or None (no lease: free to take)."""

    async def end(self, key: str, token: str, stored: bool) -> None:
        """The leader is done: `stored` leaves `STORED` for a while, else the lease goes
        (a waiter then leads). A token no longer current (the lease expired) changes nothing."""


class MemoryLeases:
    """`FlightLeases` in one process (its leases and their expiry in a dict)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}  # key -> token or STORED, expiry

    def _current(self, key: str) -> str | None:
        held = self._leases.get(key)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._leases[key]
            return None
        return held[0]

    async def take(self, key: str, seconds: float) -> str:
        current = self._current(key)
        if current is not None:
            return STORED if current == STORED else ELSEWHERE
        token = secrets.token_hex(8)
        self._leases[key] = (token, self._clock() + seconds)
        return token

    async def state(self, key: str) -> str | None:
        current = self._current(key)
        return current if current in (None, STORED) else ELSEWHERE

    async def end(self, key: str, token: str, stored: bool) -> None:
        if self._current(key) != token:
            return
        if stored:
            self._leases[key] = (STORED, self._clock() + STORED_SECONDS)
        else:
            del self._leases[key]


_ending: set[asyncio.Task[None]] = set()


class Held:
    """A cross-replica lease this request leads with; ended once."""

    __slots__ = ("_key", "_leases", "_token")

    def __init__(self, leases: FlightLeases, key: str, token: str) -> None:
        self._leases = leases
        self._key = key
        self._token: str | None = token

    async def aend(self, stored: bool) -> None:
        token, self._token = self._token, None
        if token is not None:
            await self._leases.end(self._key, token, stored)

    def end(self) -> None:
        """End with nothing stored, from code that cannot wait: in the background."""
        if self._token is not None:
            task = asyncio.create_task(self.aend(False))
            _ending.add(task)
            task.add_done_callback(_ending.discard)
