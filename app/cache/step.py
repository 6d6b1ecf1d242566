"""The cache as one step of the pipeline (DESIGN §8): look up before any candidate is
tried, follow an identical request already in flight, keep a clean answer afterwards.

`ResponseCache.lookup` returns a `CacheUse` that the pipeline carries to the end of the
request: it says what `X-Cache` is, holds the hit to replay, and, for a miss that leads
its flight, must end with `keep` (a clean answer), `fail` (an error, which its followers
answer too) or `release` (anything else).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.cache.flight import ELSEWHERE, STORED, FlightLeases, Flights, Held, Lease
from app.cache.key import BYPASS, Eligibility, XCache, cache_key, eligibility, scope_for
from app.cache.recorder import StreamRecorder
from app.cache.replay import Replay, StreamAssembler, render_hit
from app.cache.storable import is_storable
from app.cache.store import CacheStore, Entry
from app.config import Settings
from app.errors import ProxyError, UpstreamError, UpstreamTimeout
from app.request import Dialect, ParsedRequest
from app.sse import split_events


@dataclass(slots=True)
class CacheUse:
    status: XCache
    key: str | None = None
    store: bool = False
    lease: Lease | None = None
    hit: Replay | None = None
    entry: Entry | None = None
    recorder: StreamAssembler | StreamRecorder | None = None
    dialect: Dialect | None = None
    private: bool = True  # every follower of this flight is the same key (key scope)
    held: Held | None = None  # the cross-replica lease this request leads with
    allowed: Eligibility | None = None  # what `status` found, so `lookup` need not again

    def tap(self, block: bytes) -> None:
        """Every block of a stream that may be kept, as upstream sent it: chat's assembler
        wants the usage chunk a client may not have asked for; a Responses or Messages
        recording keeps what a client is sent, to replay it as it was."""
        if isinstance(self.recorder, StreamRecorder) and self.dialect is not None:
            block = self.dialect.relayed(block, True)
        if self.recorder is not None:
            for event in split_events(block):
                self.recorder.feed(event)

    def fail(self, error: ProxyError) -> None:
        """The request failed before its answer began: its followers answer the same error
        rather than each make the call again. Under the global scope followers may be other
        keys, so only what upstream said is shared; a refusal of this key's own (its share
        of the free allowance) leaves the next try to a follower."""
        if self.held is not None:
            self.held.end()
            self.held = None
        if self.lease is None:
            return
        if self.private or isinstance(error, UpstreamError):
            self.lease.fail(_for_follower(error))
        else:
            self.lease.release()
        self.lease = None

    def release(self) -> None:
        """No answer to share (an abandoned request, one not storable): a follower leads next."""
        if self.held is not None:
            self.held.end()
            self.held = None
        if self.lease is not None:
            self.lease.release()
            self.lease = None


NOT_USED = CacheUse(status="BYPASS")
POLL_SECONDS = 0.025  # how often a waiter on another replica's lease looks again
MAX_LEADERS = 3  # leases in a row gone with nothing stored before a waiter goes on its own
NO_WAIT_GIVEN = 300.0  # a lease's life when the caller named no bound


class ResponseCache:
    def __init__(
        self,
        settings: Settings,
        store: CacheStore,
        flights: Flights,
        leases: FlightLeases | None = None,
    ) -> None:
        self._mode = settings.cache
        self._scope = settings.cache_scope
        self.store = store
        self.flights = flights
        self.leases = leases  # replicas' single-flight (DESIGN §12); None in one process

    def status(self, parsed: ParsedRequest, cache_control: str | None) -> CacheUse:
        """`X-Cache` before the lookup: a request refused first (its key, a quota, a model
        it may not use) still says whether it was eligible, MISS or BYPASS (DESIGN §4)."""
        allowed = eligibility(self._mode, parsed.dialect, parsed.data, cache_control)
        return NOT_USED if allowed is BYPASS else CacheUse(status=allowed.status, allowed=allowed)

    def expect(self, parsed: ParsedRequest, caller: str | None, known: CacheUse) -> str | None:
        """Replicas: the lookup follows the admission, so the shared store sends it along
        (its round trip is the admission's). `known`: this request's `status`. The cache
        key, for `lookup` to reuse."""
        allowed = known.allowed
        if self.leases is None or allowed is None or not allowed.lookup:
            return None  # one process (a lookup is no round trip), or no lookup at all
        key = cache_key(parsed.dialect, parsed.data, parsed.model, scope_for(self._scope, caller))
        self.store.expect(key)
        return key

    async def lookup(
        self,
        parsed: ParsedRequest,
        caller: str | None,
        cache_control: str | None,
        *,
        may_serve: Callable[[str], Awaitable[bool]] | None = None,
        wait: float | None = None,
        known: CacheUse | None = None,
        key: str | None = None,
    ) -> CacheUse:
        """The request's cache use. `may_serve(model)` says whether this caller may be
        answered by `model`: an entry another key stored (global scope) carries no
        permission, so one it refuses is passed over as a miss, and the usual path then
        answers from a model the key may use or refuses it as without the cache.

        Following an identical request in flight, it waits at most `wait` seconds (what
        its own walk could take, DESIGN §12) and raises that request's error if it failed.
        `known`: this request's `status`, whose eligibility holds for the same request;
        `key`: its cache key, when `expect` computed it already.
        """
        dialect = parsed.dialect
        if known is NOT_USED:
            return NOT_USED
        allowed = known.allowed if known is not None else None
        if allowed is None:
            allowed = eligibility(self._mode, dialect, parsed.data, cache_control)
        if allowed is BYPASS:
            return NOT_USED
        if key is None:  # (`expect` computed it already)
            key = cache_key(dialect, parsed.data, parsed.model, scope_for(self._scope, caller))
        use = CacheUse(
            status=allowed.status, key=key, store=allowed.store, private=self._scope == "key"
        )
        if allowed.lookup:
            entry = await self.store.get(key)
            if entry is None:
                lease = await self._join(key, wait)
                entry = lease.entry
                use.lease = lease if lease.leading else None
                if use.lease is not None and self.leases is not None:
                    entry, use.held = await self._across(key, wait, use.lease)
                    use.lease = None if entry is not None else use.lease
            if entry is not None and may_serve is not None and not await may_serve(entry.model):
                entry = None
            if entry is not None and (hit := self._replay(entry, parsed)) is not None:
                use.status, use.hit, use.entry = "HIT", hit, entry
                return use
        if use.store and parsed.stream:
            use.dialect = dialect
            use.recorder = (
                StreamAssembler(dialect)
                if dialect.keeping.completed_event is None
                else StreamRecorder(dialect)
            )
        return use

    async def _join(self, key: str, wait: float | None) -> Lease:
        try:
            lease = await self.flights.join(key, wait)
        except TimeoutError:
            raise UpstreamTimeout(
                f"The identical request this one waited for did not finish within {wait:.0f} s, "
                "the longest this request's own attempts could have taken; retry it."
            ) from None
        if lease.failure is not None:
            assert isinstance(lease.failure, ProxyError)  # only `CacheUse.fail` sets one
            raise _for_follower(lease.failure)
        return lease

    async def _across(
        self, key: str, wait: float | None, lease: Lease
    ) -> tuple[Entry | None, Held | None]:
        """This process leads `key`: lead across replicas too, or wait (at most `wait`) for
        the replica that leads and take its stored answer, which this process's followers
        then share. After `MAX_LEADERS` leases gone with nothing stored, on its own."""
        assert self.leases is not None
        leases, seconds = self.leases, wait if wait is not None else NO_WAIT_GIVEN
        gone = 0  # leases ended (or answers evicted) with nothing to take
        try:
            async with asyncio.timeout(wait):
                taken = await leases.take(key, seconds)
                while gone < MAX_LEADERS:
                    if taken == STORED:
                        entry = await self.store.get(key)
                        if entry is not None:
                            lease.finish(entry)  # this process's followers take it too
                            return entry, None
                        gone += 1
                    elif taken != ELSEWHERE:
                        return None, Held(leases, key, taken)
                    else:
                        await asyncio.sleep(POLL_SECONDS)
                        state = await leases.state(key)
                        if state is not None:
                            taken = state
                            continue
                        gone += 1
                    taken = await leases.take(key, seconds)
        except TimeoutError:
            lease.release()
            raise UpstreamTimeout(
                f"The identical request this one waited for did not finish within {wait:.0f} s, "
                "the longest this request's own attempts could have taken; retry it."
            ) from None
        return None, None

    async def keep(
        self,
        use: CacheUse,
        dialect: Dialect,
        body: bytes | None,
        model: str,
        headers: dict[str, str],
    ) -> None:
        """Store a clean answer (`body` for a non-stream one; a stream's from its recorder)
        and hand it to the requests waiting on this flight."""
        entry: Entry | None = None
        if use.store and use.key is not None:
            stored, as_stream = self._answer(use, dialect, body)
            if stored is not None:
                entry = Entry(
                    body=stored,
                    stream=as_stream,
                    model=model,
                    created=time.time(),
                    headers=tuple(headers.items()),
                )
                if not await self.store.put(use.key, entry):
                    entry = None
        if use.held is not None:
            await use.held.aend(entry is not None)
            use.held = None
        if use.lease is not None:
            use.lease.finish(entry)
            use.lease = None

    @staticmethod
    def _answer(use: CacheUse, dialect: Dialect, body: bytes | None) -> tuple[bytes | None, bool]:
        if body is not None:
            return (body if is_storable(dialect, body) else None), False
        if use.recorder is None:
            return None, False
        return use.recorder.result(), isinstance(use.recorder, StreamRecorder)

    @staticmethod
    def _replay(entry: Entry, parsed: ParsedRequest) -> Replay | None:
        options = parsed.data.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return render_hit(entry, parsed.dialect, parsed.stream, include_usage)


def _for_follower(error: ProxyError) -> ProxyError:
    """A copy of a leader's error for one follower to answer: its own headers (each request
    adds its own id and limits to them), without the leader's attempts: the follower
    made none. The exception's own copy protocol would call `__init__`, whose arguments
    differ between the classes."""
    copied = type(error).__new__(type(error), *error.args)
    copied.__dict__.update(error.__dict__)
    copied.headers = dict(error.headers)
    copied.attempts = 0
    return copied
