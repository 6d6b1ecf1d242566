"""Identical concurrent misses make one upstream call; a failing leader does not fail the rest."""

from __future__ import annotations

import asyncio
import gc

import pytest

from app.cache.flight import Flights
from app.cache.store import Entry

pytestmark = pytest.mark.anyio

ANSWER = Entry(body=b'{"choices":[]}', stream=False, model="m", created=0.0)


class Upstream:
    """A fake upstream call: fails the first `failures` times, each call held until released."""

    def __init__(self, failures: int = 0, exc: BaseException | None = None) -> None:
        self.calls = 0
        self.failures = failures
        self.exc = exc or RuntimeError("upstream 502")
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self) -> Entry:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if self.calls <= self.failures:
            raise self.exc
        return ANSWER


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_twenty_identical_requests_make_one_call_and_all_get_the_answer():
    flights, upstream = Flights(), Upstream()
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(20)]
    await settle()
    upstream.gate.set()
    results = await asyncio.gather(*tasks)
    assert upstream.calls == 1
    assert all(entry == ANSWER for entry, _ in results)
    assert sorted(hit for _, hit in results) == [False] + [True] * 19
    assert flights.coalesced == 19
    assert len(flights) == 0


async def test_different_keys_do_not_wait_for_each_other():
    flights, upstream = Flights(), Upstream()
    upstream.gate.set()
    results = await asyncio.gather(flights.run("a", upstream), flights.run("b", upstream))
    assert upstream.calls == 2
    assert [hit for _, hit in results] == [False, False]


async def test_a_failing_leader_hands_over_to_one_new_leader():
    flights, upstream = Flights(), Upstream(failures=1)
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(10)]
    await settle()
    upstream.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert upstream.calls == 2
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [str(e) for e in errors] == ["upstream 502"]  # only the first leader's own caller
    assert all(r[0] == ANSWER for r in results if not isinstance(r, BaseException))


async def test_a_cancelled_leader_hands_over_to_a_follower():
    """The leader's client left: its followers still get an answer, from one new call."""
    flights, upstream = Flights(), Upstream()
    leader = asyncio.create_task(flights.run("k", upstream))
    await upstream.started.wait()
    followers = [asyncio.create_task(flights.run("k", upstream)) for _ in range(5)]
    await settle()
    leader.cancel()
    await settle()
    upstream.gate.set()
    results = await asyncio.gather(*followers)
    assert leader.cancelled()
    assert upstream.calls == 2
    assert all(entry == ANSWER for entry, _ in results)
    assert sorted(hit for _, hit in results) == [False] + [True] * 4


async def test_an_unstorable_answer_lets_the_next_follower_lead():
    flights = Flights()
    calls = 0

    async def call() -> Entry | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return None if calls == 1 else ANSWER

    results = await asyncio.gather(*(flights.run("k", call) for _ in range(4)))
    assert calls == 2
    assert results[0] == (None, False)
    assert sorted(r[1] for r in results[1:]) == [False, True, True]


async def test_serial_leader_failures_are_bounded_then_each_goes_on_its_own():
    flights = Flights(max_leaders=2)
    upstream = Upstream(failures=1000)
    tasks = [asyncio.create_task(flights.run("k", upstream)) for _ in range(6)]
    await settle()
    upstream.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)  # each its own call's error
    assert upstream.calls == 6
    assert len(flights) == 0


async def test_a_leader_ticket_dropped_unfinished_wakes_its_followers():
    """A streaming body that never ran never reaches its `finally`: the ticket's end must."""
    flights = Flights()
    ticket = await flights.join("k")
    assert ticket.leading
    follower = asyncio.create_task(flights.join("k"))
    await settle()
    assert not follower.done()
    del ticket
    gc.collect()
    taken_over = await asyncio.wait_for(follower, 5)
    assert taken_over.leading and taken_over.entry is None
    taken_over.finish(ANSWER)
    assert (await flights.join("k")).leading  # finished flights leave nothing behind


async def test_a_follower_stops_waiting_for_a_slow_leader_after_the_timeout():
    flights = Flights(wait_timeout=0.01)
    leader = await flights.join("k")
    follower = await asyncio.wait_for(flights.join("k"), 5)
    assert follower.leading  # on its own: not registered, so it cannot block anyone
    leader.finish(ANSWER)


async def test_a_cancelled_follower_does_not_disturb_the_flight():
    flights, upstream = Flights(), Upstream()
    leader = asyncio.create_task(flights.run("k", upstream))
    quitter = asyncio.create_task(flights.run("k", upstream))
    stayer = asyncio.create_task(flights.run("k", upstream))
    await settle()
    quitter.cancel()
    upstream.gate.set()
    assert (await leader) == (ANSWER, False)
    assert (await stayer) == (ANSWER, True)
    assert upstream.calls == 1
