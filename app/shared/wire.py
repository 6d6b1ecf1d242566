"""The request path's Redis round trips on one pipelined connection (DESIGN §12 "Cheap").

A keyed request makes two round trips (the admission before its upstream call, the lease's
release after); through redis-py's pipeline each cost ~50 µs more of the proxy's CPU than
the socket work itself (a pool checkout, a command object per call, response callbacks),
and the keyed path on Redis could not reach 70 % of the keyed path in memory
(bench/README.md). Here a round trip is a `Batch` of argument tuples: encoded in one
`bytes`, written with whatever other requests sent in the same loop turn (one write for
all of them), and answered in order by hiredis' reader. The cache's and the flight
leases' calls go this way too, so they keep their order with what was posted before
them; the rest (the heartbeat, the free budget's transaction, cooldown marks, the status
page's data) stays on redis-py.

Failures are redis-py's exceptions, so every caller's `DOWN` handling holds: a refused or
lost connection fails the calls in flight with `ConnectionError`, the next call connects
again; a call cancelled by its deadline leaves its place in the queue (its answer is read
and dropped, so the rest stay in order), and a connection whose oldest call is unanswered
for `STUCK_SECONDS` is closed, never waited on again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError, ResponseError

Arg = str | bytes | int | float
STUCK_SECONDS = 1.0  # an unanswered round trip this old means a stuck connection


@dataclass(slots=True)
class Batch:
    """The commands of one round trip, in order; a script's source kept beside its
    EVALSHA, to run it by text if Redis lost it (`NOSCRIPT`, after a restart)."""

    commands: list[tuple[Arg, ...]] = field(default_factory=list)
    sources: dict[int, str] = field(default_factory=dict)
    queued: int = 0  # the first commands are writes queued earlier (`Shared.queued`)

    def add(self, *args: Arg) -> None:
        self.commands.append(args)

    def script(self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg] = ()) -> None:
        self.sources[len(self.commands)] = source
        self.commands.append(("EVALSHA", sha, len(keys), *keys, *args))

    def __len__(self) -> int:
        return len(self.commands)


# hiredis' C packer (floats as repr, as redis-py); its stub types one argument only.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


def encode(commands: list[tuple[Arg, ...]]) -> bytes:
    """RESP arrays of bulk strings."""
    return b"".join(map(_pack, commands))


class _Call:
    """One round trip waiting for its replies."""

    __slots__ = ("answer", "expected", "replies", "sent")

    def __init__(self, answer: asyncio.Future[list[Any]], expected: int) -> None:
        self.answer = answer
        self.expected = expected
        self.replies: list[Any] = []
        self.sent = time.monotonic()


class _Protocol(asyncio.Protocol):
    """Replies in order, each to the call at the head of the queue."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.calls: deque[_Call] = deque()
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # written at the end of this loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        calls = self.calls
        while (reply := self.reader.gets()) is not False:
            call = calls[0]
            call.replies.append(reply)
            if len(call.replies) == call.expected:
                calls.popleft()
                if not call.answer.done():
                    call.answer.set_result(call.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.calls:
            answer = self.calls.popleft().answer
            if not answer.done():
                answer.set_exception(ConnectionError("Redis closed the connection"))

    def flush(self) -> None:
        if self.transport is not None and self.pending:
            self.transport.write(b"".join(self.pending))
        self.pending.clear()


class Wire:
    """One connection to Redis at `host:port` (or a unix socket), opened on first use."""

    def __init__(
        self, options: dict[str, Any], connect_timeout: float, scripts: Sequence[str] = ()
    ) -> None:
        self._options = options
        self._connect_timeout = connect_timeout
        self._scripts = scripts  # loaded on every new connection, before any call
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def send(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Every command's reply, in order; an error reply as a `ResponseError` value."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or self._stuck(protocol):
            protocol = await self._connected()
        return await self._queue(protocol, commands)

    def post(self, commands: list[tuple[Arg, ...]]) -> asyncio.Future[list[Any]] | None:
        """`send` without a coroutine, for a caller that does not wait; None when there is
        no open connection to send on (the caller sends it with `send`)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or self._stuck(protocol):
            return None
        return self._queue(protocol, commands)

    def _queue(
        self, protocol: _Protocol, commands: list[tuple[Arg, ...]]
    ) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), len(commands))
        if not commands:  # no reply will come to complete it, nor pass it in the queue
            call.answer.set_result([])
            return call.answer
        protocol.calls.append(call)
        if not protocol.pending:
            loop.call_soon(protocol.flush)
        protocol.pending.append(encode(commands))
        return call.answer

    def _stuck(self, protocol: _Protocol) -> bool:
        calls = protocol.calls
        if calls and time.monotonic() - calls[0].sent > STUCK_SECONDS:
            assert protocol.transport is not None
            protocol.transport.abort()  # fails what waits on it (connection_lost)
            return True
        return False

    async def _connected(self) -> _Protocol:
        """The connection, opened by the first caller; the others wait for that one."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        protocol = await asyncio.shield(self._connecting)
        self._protocol = protocol
        return protocol

    async def _connect(self) -> _Protocol:
        """A new connection, logged in, on its database, with every script loaded: so a
        batch's EVALSHA finds its script after a Redis restart, and the writes queued in
        it keep their order (a script run again by its text would follow the reads)."""
        loop = asyncio.get_running_loop()
        options = self._options
        async with asyncio.timeout(self._connect_timeout):
            if "path" in options:
                _, protocol = await loop.create_unix_connection(_Protocol, options["path"])
            else:
                host, port = options.get("host", "localhost"), options.get("port", 6379)
                _, protocol = await loop.create_connection(_Protocol, host, port)
            hello: list[tuple[Arg, ...]] = []
            if (password := options.get("password")) is not None:
                user = options.get("username")
                hello.append(("AUTH", user, password) if user else ("AUTH", password))
            if options.get("db"):
                hello.append(("SELECT", int(options["db"])))
            hello.extend(("SCRIPT", "LOAD", source) for source in self._scripts)
            if hello:
                replies = await self._queue(protocol, hello)
                refused = [reply for reply in replies if isinstance(reply, ResponseError)]
                if refused:
                    assert protocol.transport is not None
                    protocol.transport.close()
                    raise refused[0]  # a wrong password, a database out of range
        return protocol

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
