"""Identical concurrent misses make one upstream call; its answer or its failure is every
follower's; a leader that ends with nothing hands over to one follower, a bounded number of
times. Each test looks while the calls are still held, so a follower that did not wait, or
a leader too many, shows."""

from __future__ import annotations

import asyncio
import gc

import pytest

from app.api.chat import CHAT
from app.cache.flight import Flights
from app.cache.step import ResponseCache
from app.cache.store import Entry, MemoryCache
from app.errors import ProxyError, RateLimited, UpstreamRejected
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

ANSWER = Entry(body=b'{"choices":[]}', stream=False, model="m", created=0.0)


class Upstream:
    """A fake upstream call: each call is held until the test ends it with `end`."""

    def __init__(self) -> None:
        self.calls = 0
        self._held: list[asyncio.Future[Entry | None]] = []

    @property
    def in_flight(self) -> int:
        return sum(not call.done() for call in self._held)

    async def __call__(self) -> Entry | None:
        self.calls += 1
        call = asyncio.get_running_loop().create_future()
        self._held.append(call)
        return await call

    def end(self, result: Entry | None | Exception) -> None:
        """End every call now held with `result` (an answer, None, or an error to raise)."""
        for call in self._held:
            if call.done():
                continue
            if isinstance(result, Exception):
                call.set_exception(result)
            else:
                call.set_result(result)


async def settle() -> None:
    """Let every task run until it blocks again (no I/O here: a bounded number of turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def ended(tasks: list[asyncio.Task[tuple[Entry | None, bool]]]) -> list[object]:
    """What each task ended with, once all should have: one still waiting fails the test
    rather than hang it."""
    await settle()
    assert all(task.done() for task in tasks), "a request still waits"
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_twenty_identical_requests_make_one_call_and_all_get_the_answer():
    flights, upstream = Flights(), Upstream()
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(20)]
    await settle()
    assert (upstream.calls, upstream.in_flight) == (1, 1)
    assert not any(task.done() for task in tasks)  # nineteen wait for the one call
    upstream.end(ANSWER)
    results = await ended(tasks)
    assert upstream.calls == 1
    assert all(entry == ANSWER for entry, _ in results)
    assert sorted(hit for _, hit in results) == [False] + [True] * 19
    assert flights.coalesced == 19
    assert len(flights) == 0


async def test_different_keys_do_not_wait_for_each_other():
    flights, upstream = Flights(), Upstream()
    tasks = [asyncio.create_task(flights.run(key, upstream)) for key in ("a", "b")]
    await settle()
    assert upstream.in_flight == 2
    upstream.end(ANSWER)
    assert await ended(tasks) == [(ANSWER, False)] * 2


async def test_a_failed_call_is_every_followers_failure_and_is_not_made_again():
    flights, upstream = Flights(), Upstream()
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(10)]
    await settle()
    assert (upstream.calls, upstream.in_flight) == (1, 1)
    failure = RuntimeError("upstream 502")
    upstream.end(failure)
    assert await ended(tasks) == [failure] * 10
    assert upstream.calls == 1
    assert len(flights) == 0
    again = asyncio.create_task(flights.run("k", upstream))  # the next miss leads a new call
    await settle()
    assert upstream.calls == 2
    upstream.end(ANSWER)
    assert await ended([again]) == [(ANSWER, False)]


async def test_a_cancelled_leader_hands_over_to_a_follower():
    """The leader's client left: its followers still get an answer, from one new call."""
    flights, upstream = Flights(), Upstream()
    leader = asyncio.create_task(flights.run("k", upstream))
    await settle()
    followers = [asyncio.create_task(flights.run("k", upstream)) for _ in range(5)]
    await settle()
    leader.cancel()
    await settle()
    assert leader.cancelled()
    assert (upstream.calls, upstream.in_flight) == (2, 1)  # one follower took over
    upstream.end(ANSWER)
    results = await ended(followers)
    assert upstream.calls == 2
    assert all(entry == ANSWER for entry, _ in results)
    assert sorted(hit for _, hit in results) == [False] + [True] * 4


async def test_an_unstorable_answer_lets_the_next_follower_lead():
    flights, upstream = Flights(), Upstream()
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(4)]
    await settle()
    upstream.end(None)  # the leader's own caller relays it; nothing to hand over
    await settle()
    assert (upstream.calls, upstream.in_flight) == (2, 1)
    upstream.end(ANSWER)
    results = await ended(tasks)
    assert results[0] == (None, False)
    assert sorted(r[1] for r in results[1:]) == [False, True, True]


async def test_leaders_that_end_with_nothing_hand_over_one_at_a_time_up_to_the_cap():
    """Each leader that ends with nothing to share hands over to exactly one follower; after
    `max_leaders` of them in a row, the followers still waiting each make their own call."""
    flights, upstream = Flights(max_leaders=3), Upstream()
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(8)]
    for leaders in (1, 2, 3):
        await settle()
        assert (upstream.calls, upstream.in_flight) == (leaders, 1)
        upstream.end(None)
    await settle()
    assert (upstream.calls, upstream.in_flight) == (8, 5)  # the rest at once, on their own
    upstream.end(None)
    assert await ended(tasks) == [(None, False)] * 8
    assert len(flights) == 0


async def test_a_leader_lease_dropped_unfinished_wakes_its_followers():
    """A streaming body that never ran never reaches its `finally`: the lease's end must."""
    flights = Flights()
    lease = await flights.join("k")
    assert lease.leading
    follower = asyncio.create_task(flights.join("k"))
    await settle()
    assert not follower.done()
    del lease
    gc.collect()
    taken_over = await asyncio.wait_for(follower, 5)
    assert taken_over.leading and taken_over.entry is None
    taken_over.finish(ANSWER)
    assert (await flights.join("k")).leading  # finished flights leave nothing behind


async def test_a_follower_waits_no_longer_than_it_was_given_and_leaves_the_flight_intact():
    flights = Flights()
    leader = await flights.join("k")
    impatient = asyncio.create_task(flights.join("k", wait=0.01))
    patient = asyncio.create_task(flights.join("k"))
    done, _ = await asyncio.wait({impatient}, timeout=5)
    assert impatient in done and isinstance(impatient.exception(), TimeoutError)
    assert not patient.done()
    leader.finish(ANSWER)
    await settle()
    assert patient.done() and patient.result().entry == ANSWER


async def test_a_cancelled_follower_does_not_disturb_the_flight():
    flights, upstream = Flights(), Upstream()
    leader = asyncio.create_task(flights.run("k", upstream))
    quitter = asyncio.create_task(flights.run("k", upstream))
    stayer = asyncio.create_task(flights.run("k", upstream))
    await settle()
    quitter.cancel()
    upstream.end(ANSWER)
    assert await ended([leader, stayer]) == [(ANSWER, False), (ANSWER, True)]
    assert upstream.calls == 1


REQUEST = CHAT.parse(
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}', "free"
)


@pytest.mark.parametrize(
    ("scope", "follower_key", "error", "shared"),
    [
        ("key", "alice", UpstreamRejected(400, "Provider refused the request"), True),
        ("key", "alice", RateLimited("alice's share is used", retry_after=30), True),
        ("global", "bob", UpstreamRejected(400, "Provider refused the request"), True),
        ("global", "bob", RateLimited("alice's share is used", retry_after=30), False),
    ],
)
async def test_a_followers_error_is_its_leaders_unless_it_was_another_keys_own(
    scope: str, follower_key: str, error: ProxyError, shared: bool
):
    """What upstream said is everyone's; a refusal of the leader's own key is not another
    key's (global scope): that follower leads the next try instead. A follower answers a
    copy: its own headers, and no attempts of its own."""
    cache = ResponseCache(make_settings(cache_scope=scope), MemoryCache.from_mb(1, 60), Flights())
    leader = await cache.lookup(REQUEST, "alice", None)
    follower = asyncio.create_task(cache.lookup(REQUEST, follower_key, None))
    await settle()
    assert leader.lease is not None and not follower.done()
    error.attempts = 2
    leader.fail(error)
    await settle()
    assert follower.done()
    if not shared:
        assert (await follower).lease is not None
        return
    with pytest.raises(type(error)) as raised:
        await follower
    copy = raised.value
    assert copy is not error
    assert (copy.status_code, copy.body()) == (error.status_code, error.body())
    assert copy.attempts == 0
    copy.headers["X-Request-Id"] = "the follower's"
    assert "X-Request-Id" not in error.headers
