"""The request path's Redis connection (`app/shared/wire.py`, DESIGN §12 "Cheap"): every
round trip gets its own replies however many share a write; a script Redis lost runs
again; a refused, closed or stuck connection fails fast with the errors the failover
knows (`DOWN`) and the next call connects again. Against the session's real
redis-server, and a fake one where Redis must misbehave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from app.shared import wire
from app.shared.connection import DOWN, Shared
from app.shared.cooldowns import RedisCooldowns
from app.shared.wire import Batch, Wire
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SCRIPT = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[Shared]:
    client = Shared(redis_url, "orp:")
    yield client
    await client.aclose()


async def test_round_trips_sent_together_each_get_their_own_replies_in_order(shared: Shared):
    async def one(i: int) -> list[object]:
        batch = Batch()
        batch.add("SET", f"k{i}", f"v{i}")
        batch.add("GET", f"k{i}")
        batch.add("INCRBY", "total", i)
        batch.add("GET", "no-such-key")
        return await shared.send(batch)

    answers = await asyncio.gather(*(one(i) for i in range(200)))
    for i, (stored, read, _total, missing) in enumerate(answers):
        assert (stored, read, missing) == (b"OK", f"v{i}".encode(), None)
    # Every INCRBY ran once, each answer after the ones sent before it.
    assert max(int(answer[2]) for answer in answers) == sum(range(200))


async def test_a_script_redis_lost_runs_again_by_its_text(shared: Shared, redis_url: str):
    sha = shared.script(SCRIPT).sha
    direct = redis.asyncio.Redis.from_url(redis_url)
    try:
        for expected in (1, 2):
            await direct.script_flush()  # as after a restart: Redis holds no script
            batch = Batch()
            batch.add("SET", "before", "1")
            batch.script(sha, SCRIPT, ["counter"], ["x"])
            assert await shared.send(batch) == [b"OK", [b"counter", b"x", expected]]
        # A script queued to go with a write sent without waiting (a model's success with
        # a lease's release) is run again too.
        await direct.script_flush()
        queued = [("y",)]

        def move(batch: Batch) -> None:  # a store's queue: its writes go once
            while queued:
                batch.script(sha, SCRIPT, ["counter"], queued.pop())

        shared.queue(move)
        shared.post("SET", "released", "1")
        for _ in range(100):
            if await direct.get("counter") == b"3":
                break
            await asyncio.sleep(0.01)
        assert await direct.mget("counter", "released") == [b"3", b"1"]
    finally:
        await direct.aclose()


async def test_an_error_reply_is_a_value_and_the_calls_after_it_go_on(shared: Shared):
    batch = Batch()
    batch.add("SET", "text", "abc")
    batch.add("INCR", "text")
    batch.add("GET", "text")
    ok, refused, read = await shared.send(batch)
    assert (ok, read) == (b"OK", b"abc")
    assert isinstance(refused, redis.ResponseError) and "not an integer" in str(refused)


async def test_a_wrong_password_is_an_error_the_failover_knows(redis_server: RedisServer):
    client = Wire({"host": "127.0.0.1", "port": redis_server.port, "password": "wrong"}, 1.0)
    with pytest.raises(DOWN) as raised:
        await client.send([("PING",)])
    assert "wrong" not in str(raised.value)
    client.close()


class _Silent:
    """A server that accepts and reads and never answers (a stuck Redis), or that closes
    the connection on the first bytes; counts its connections."""

    def __init__(self, close: bool = False) -> None:
        self.close = close
        self.connections = 0
        self.answer = False  # later connections answer +PONG to anything

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answering = self.answer
        try:
            while (data := await reader.read(1024)) and not self.close:
                if answering:
                    writer.write(b"+PONG\r\n" * data.count(b"PING"))
        finally:
            writer.close()


async def _listening(server: _Silent) -> tuple[asyncio.Server, int]:
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    return listening, listening.sockets[0].getsockname()[1]


async def test_a_stuck_connection_is_dropped_and_the_next_call_connects_again(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(wire, "STUCK_SECONDS", 0.1)
    silent = _Silent()
    listening, port = await _listening(silent)
    client = Wire({"host": "127.0.0.1", "port": port}, 1.0)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.send([("PING",)])
        silent.answer = True  # Redis is back; the old connection never will be
        assert await client.send([("PING",)]) == [b"PONG"]
        assert silent.connections == 2
    finally:
        client.close()
        listening.close()
        await listening.wait_closed()


async def test_a_connection_closed_or_refused_fails_at_once_with_an_error_the_failover_knows():
    closing = _Silent(close=True)
    listening, port = await _listening(closing)
    client = Wire({"host": "127.0.0.1", "port": port}, 1.0)
    try:
        async with asyncio.timeout(2):
            with pytest.raises(DOWN):
                await client.send([("PING",)])
            with pytest.raises(DOWN):  # the next call connects again, and is refused again
                await client.send([("PING",)])
        assert closing.connections == 2
    finally:
        client.close()
        listening.close()
        await listening.wait_closed()
    async with asyncio.timeout(2):
        with pytest.raises(DOWN):
            await client.send([("PING",)])  # nothing listens there any more


async def test_a_read_another_request_sent_is_waited_for_not_sent_again_empty(shared: Shared):
    """Two requests want the same cooldowns read: the first request's round trip took it,
    the second finds it in flight. It waits for that answer; a round trip with nothing to
    send would have held the connection's queue for good (every later call timing out, the
    replica taking Redis for gone)."""
    cooldowns = RedisCooldowns(shared, time.time)
    models = ["a/model", "b/model"]
    cooldowns.expect(models, time.time())
    flying = asyncio.ensure_future(shared.trip(lambda batch: batch.add("PING")))
    await asyncio.sleep(0)  # the trip took the read and waits for its replies
    async with asyncio.timeout(2):
        states = await cooldowns.snapshot(models, time.time())
        assert await flying == [b"PONG"]
        assert await shared.send(_one("PING")) == [b"PONG"]  # the connection still answers
    assert not states.cooling and not states.failing


def _one(*command: str) -> Batch:
    batch = Batch()
    batch.add(*command)
    return batch
