"""A keyed request with its state in Redis is cheap (DESIGN §12 "Cheap", issue 25): one
round trip to Redis before its upstream call (the admission of every limit, the key's use
for the fair share, the cooldowns' read) and one after (the lease's release, the tokens,
the model's success), counted on the real connection to the real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio.connection import AbstractConnection

from app.cache.flight import STORED
from app.main import create_app
from app.shared import activity, failover, wire
from tests.conftest import make_settings
from tests.fake_openrouter import SCOUT, FakeOpenRouter
from tests.live_server import LiveServer
from tests.polling import wait_until
from tests.test_e2e_team import CHAT, GPT, HI, bearer, create_key

pytestmark = pytest.mark.e2e


def day(key: str) -> str:
    """A key's counts of the UTC day in Redis (rpd, tpd)."""
    return f"orp:q:{key}:d:{int(time.time() // 86400)}"


class Trips:
    """Each send the proxy makes to Redis (one command, one pipeline, or one write of the
    request path's connection): when, and what."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def between(self, start: float, end: float) -> list[bytes]:
        return [what for at, what in self.sent if start <= at < end]


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trips]:
    seen = Trips()
    send = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | str) else b"".join(command)
        seen.sent.append((time.monotonic(), packed.encode() if isinstance(packed, str) else packed))
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    # The request path's own connection (`app/shared/wire.py`): one write a loop turn.
    flush = wire._Protocol.flush

    def flushed(self: wire._Protocol) -> None:
        if self.pending:
            seen.sent.append((time.monotonic(), b"".join(self.pending)))
        flush(self)

    monkeypatch.setattr(wire._Protocol, "flush", flushed)
    # The replica's own beats (heartbeat, status activity) are once a second, not a
    # request's: they start with the server, then wait past the test.
    monkeypatch.setattr(failover, "BEAT_SECONDS", 3600.0)
    monkeypatch.setattr(activity, "PUBLISH_SECONDS", 3600.0)
    yield seen


def test_a_keyed_request_makes_one_round_trip_before_its_upstream_call_and_one_after(
    fake: FakeOpenRouter, fake_server: LiveServer, redis_url: str, tmp_path: Path, trips: Trips
):
    db = tmp_path / "proxy.db"
    limits = ("--rpm", "100", "--rpd", "1000", "--tpd", "1000000", "--concurrency", "5", "--paid")
    warm, measured = create_key(db, "warm", *limits), create_key(db, "measured", *limits)
    settings = make_settings(fake_server.url, db_path=db, redis_url=redis_url)
    with LiveServer(create_app(settings)) as proxy, redis.Redis.from_url(redis_url) as direct:
        # Connections opened and the scripts loaded by another key's request, on another
        # model: the measured one finds nothing of its own kept.
        body = {"model": SCOUT, "messages": HI, "temperature": 0.7}
        assert httpx.post(f"{proxy.url}{CHAT}", json=body, headers=bearer(warm)).status_code == 200
        wait_until(lambda: direct.hget(day("warm"), "t"), 5, "the first tokens written")
        started = time.monotonic()
        body = {"model": GPT, "messages": HI, "temperature": 0.7}
        answer = httpx.post(f"{proxy.url}{CHAT}", json=body, headers=bearer(measured))
        assert answer.status_code == 200
        wait_until(lambda: direct.hget(day("measured"), "t"), 5, "the tokens written")
        finished = time.monotonic()
    called = fake.chat_requests()[-1].arrived_at
    before, after = trips.between(started, called), trips.between(called, finished)
    assert len(before) == 1, before
    assert len(after) == 1, after
    # What each carried: the key's use went with the admission, the tokens and the model's
    # success with the release.
    assert b"budget:active" in before[0] and b"q:measured:m" in before[0]
    assert b"ZREM" in after[0] and b"HINCRBY" in after[0] and f"failing:{GPT}".encode() in after[0]


def test_a_cacheable_request_looks_up_the_cache_in_its_one_round_trip_before_the_call(
    fake: FakeOpenRouter, fake_server: LiveServer, redis_url: str, tmp_path: Path, trips: Trips
):
    db = tmp_path / "proxy.db"
    limits = ("--rpm", "100", "--concurrency", "5", "--paid")
    warm, measured = create_key(db, "warm", *limits), create_key(db, "measured", *limits)
    settings = make_settings(fake_server.url, db_path=db, redis_url=redis_url)
    with LiveServer(create_app(settings)) as proxy:
        body = {"model": SCOUT, "messages": HI, "temperature": 0}
        assert httpx.post(f"{proxy.url}{CHAT}", json=body, headers=bearer(warm)).status_code == 200
        time.sleep(0.2)  # the first request's writes sent
        started = time.monotonic()
        body = {"model": GPT, "messages": HI, "temperature": 0}
        answer = httpx.post(f"{proxy.url}{CHAT}", json=body, headers=bearer(measured))
        assert (answer.status_code, answer.headers["x-cache"]) == (200, "MISS")
    called = fake.chat_requests()[-1].arrived_at
    before = trips.between(started, called)
    # The admission and the cache lookup (with the flight lease) went in one round trip.
    assert len(before) == 1, before
    assert b"q:measured:m" in before[0] and b"orp:cache:lru" in before[0]
    assert b"orp:flight:" in before[0]


def test_a_request_refused_by_its_quota_leaves_no_flight_lease_behind(
    fake_server: LiveServer, redis_url: str, tmp_path: Path
):
    """Its lookup went along with the admission and took the flight lease for its key; the
    refusal gives it back, so an identical request on another replica need not wait."""
    db = tmp_path / "proxy.db"
    limited = create_key(db, "limited", "--rpm", "1", "--paid")
    settings = make_settings(fake_server.url, db_path=db, redis_url=redis_url)
    with LiveServer(create_app(settings)) as proxy, redis.Redis.from_url(redis_url) as direct:
        for text, status in (("first", 200), ("second", 429)):
            body = {"model": GPT, "messages": [{"role": "user", "content": text}], "temperature": 0}
            answer = httpx.post(f"{proxy.url}{CHAT}", json=body, headers=bearer(limited))
            assert answer.status_code == status

        def leases() -> list[bytes]:  # held by a request (a stored answer's mark aside)
            held = [direct.get(key) for key in direct.keys("orp:flight:*")]
            return [value for value in held if value not in (None, STORED.encode())]

        wait_until(lambda: not leases(), 1.0, "the refused request's lease given back")
