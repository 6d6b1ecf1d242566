"""One Redis client for every shared store: one connection pool, a short deadline on every
call (no request hangs on a dead Redis), and the prefix every key is written under.

Writes nobody waits for (a model's success, a key's tokens) are queued by their stores and
go in one round trip: ahead of the next one a store makes anyway (a lease's release, a
cooldown read), or `FLUSH_SECONDS` later, off every client's path. So a request makes one
round trip after its upstream call at most (DESIGN §12 "Cheap"), and what one replica
records still reaches the others well within §12's 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from app.shared.wire import Arg, Batch, Wire

log = logging.getLogger(__name__)

# A connect gives up after this, and a queued write after twice it (Redis on a LAN answers
# in < 1 ms); every other call has the failover's deadline (CALL_DEADLINE).
CALL_TIMEOUT = 0.25
# What a dead or stuck Redis raises through redis-py (timeouts are TimeoutError or RedisError).
DOWN = (RedisError, OSError, TimeoutError)
# Queued writes go this long after the first of them: one round trip for all queued meanwhile.
FLUSH_SECONDS = 0.02


class Read(Protocol):
    """A read another store's round trip may carry (`Shared.read_along`)."""

    def add(self, batch: Batch) -> None:
        """Put the one command of the read into `batch`."""

    def deliver(self, result: Any) -> None:
        """Its answer: a value, or the error (raised, or Redis' error reply)."""


class Shared:
    """The client and the key prefix (PROXY_REDIS_URL, PROXY_REDIS_PREFIX)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client: Redis = Redis.from_url(
            url,
            # No socket_timeout: redis-py wraps every send in asyncio.wait_for with it, a
            # task per command (~30 % of the client's CPU per call, bench/README.md). Every
            # call already runs under a deadline of its own (the failover's CALL_DEADLINE,
            # `later`'s and the renewal's), which ends a call to a stuck Redis all the same.
            socket_connect_timeout=CALL_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a retry would double the wait on a dead Redis
        )
        # The request path's round trips (`send`). Over TLS they stay on redis-py, whose
        # connections do not load the scripts first: there a script Redis does not hold
        # yet runs again by its text after the rest of its batch (`_settle`).
        self._scripts: list[str] = []  # every script a store registered (`script`)
        options = dict(parse_url(url))
        self._wire = (
            None if url.startswith("rediss:") else Wire(options, CALL_TIMEOUT, self._scripts)
        )
        self.prefix = prefix
        self.where = safe_url(url)
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: list[Callable[[Batch], None]] = []
        self._reads: list[Read] = []
        # Sent at the end of this loop turn (`post`): each command, and a script's source.
        self._posts: list[tuple[tuple[Arg, ...], str | None]] = []
        self._due = False  # a send of the queued writes is scheduled
        # Told when a write nobody waits for finds Redis away (the failover's switch).
        self.on_down: Callable[[BaseException], None] | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> AsyncScript:
        """A Lua script run by its SHA (loaded on every connection of the request path)."""
        self._scripts.append(source)
        return self.client.register_script(source)

    def background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` (a renewal, a heartbeat) until it ends or `aclose`."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def queue(self, move: Callable[[Batch], None]) -> None:
        """Register a store's queue: `move` puts its queued writes into a batch (and
        forgets them), whichever round trip goes first."""
        self._queues.append(move)

    def queued(self) -> Batch:
        """A round trip's batch, starting with every store's queued writes."""
        batch = Batch()
        for move in self._queues:
            move(batch)
        batch.queued = len(batch)
        return batch

    async def send(self, batch: Batch) -> list[Any]:
        """One round trip: every reply in order, an error reply as its `ResponseError`.
        A script Redis lost (`NOSCRIPT`: it restarted) runs again by its text."""
        return await self._settle(batch, await self._send(batch.commands))

    async def call(self, sha: str, source: str, keys: list[str], args: list[Arg]) -> Any:
        """One script on the request path's connection, its reply (an error raised): in
        order with what this replica posted before it (`post`)."""
        batch = Batch()
        batch.script(sha, source, keys, args)
        (reply,) = await self.send(batch)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def post(self, *command: Arg, source: str | None = None) -> None:
        """Send `command` and wait for nothing (a lease's release): at the end of this loop
        turn, in one batch with the turn's other posts and every write queued by then; no
        task and no timer of its own. Its reply is checked when it comes, and lost if
        Redis is away (a lease then lapses, as a dead replica's would)."""
        if not self._posts:
            asyncio.get_running_loop().call_soon(self._post_now)
        self._posts.append((command, source))

    def _post_now(self) -> None:
        if not self._posts:
            return  # sent already, ahead of a call (`_send`)
        posts, self._posts = self._posts, []
        batch = self.queued()
        for command, source in posts:
            if source is not None:  # an EVALSHA: run by its text if Redis lost it
                batch.sources[len(batch.commands)] = source
            batch.add(*command)
        sent = None if self._wire is None else self._wire.post(batch.commands)
        if sent is None:  # no connection yet (what a call makes meanwhile may go first), or TLS
            self.background(self._quietly(batch, None))
            return

        def check(sent: asyncio.Future[list[Any]]) -> None:
            if not sent.cancelled() and sent.exception() is None:
                replies = sent.result()
                if any(isinstance(reply, ResponseError) for reply in replies):
                    self.background(self._quietly(batch, replies))

        sent.add_done_callback(check)

    async def _quietly(self, batch: Batch, replies: list[Any] | None) -> None:
        with contextlib.suppress(*DOWN):
            async with asyncio.timeout(CALL_TIMEOUT * 2):
                if replies is None:
                    replies = await self._send(batch.commands)
                await self._settle(batch, replies)

    async def _settle(self, batch: Batch, replies: list[Any]) -> list[Any]:
        """`replies` with the lost scripts run again; the queued writes refused logged."""
        lost = [i for i in batch.sources if _no_script(replies[i])]
        if lost:
            again = [("EVAL", batch.sources[i], *batch.commands[i][2:]) for i in lost]
            for i, reply in zip(lost, await self._send(again), strict=True):
                replies[i] = reply
        for reply in replies[: batch.queued]:
            if isinstance(reply, ResponseError):  # a queued write Redis refused: a bug
                log.error("a queued write to Redis at %s failed: %s", self.where, reply)
        return replies

    async def _send(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        if self._posts:  # what was posted before goes first: calls keep their order
            self._post_now()
        if not commands:
            return []  # (a call awaiting no reply would hold the connection's queue)
        if self._wire is not None:
            return await self._wire.send(commands)
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))

    def read_along(self, read: Read) -> None:
        """Send `read` with the next round trip `trip` makes (the admission's)."""
        self._reads.append(read)

    def unread(self, read: Read) -> None:
        """`read` is no longer wanted (no round trip took it): forget it."""
        with contextlib.suppress(ValueError):
            self._reads.remove(read)

    async def trip(self, commands: Callable[[Batch], object]) -> list[Any]:
        """One round trip: the queued writes, then `commands`, then the expected reads.
        Returns the replies of `commands` (an error reply as its value)."""
        reads, self._reads = self._reads, []
        batch = self.queued()
        first = len(batch)
        commands(batch)
        own = len(batch)
        for read in reads:
            read.add(batch)
        try:
            results = await self.send(batch)
        except BaseException as error:
            for read in reads:
                read.deliver(error)
            raise
        for read, result in zip(reads, results[own:], strict=True):
            read.deliver(result)
        return results[first:own]

    async def read(self, read: Read, answered: asyncio.Future[Any]) -> None:
        """Until `read` is answered (`answered` done): sent now, with every read waiting
        for a round trip, when none took it yet (the request made no round trip of its
        own: a key without limits); else waited for on the round trip that took it."""
        if read in self._reads:
            await self.trip(_no_commands)
        await asyncio.shield(answered)

    def later(self) -> None:
        """Send the queued writes in `FLUSH_SECONDS`, unless a send is due already."""
        if not self._due:
            self._due = True
            self.background(self._flush_later())

    async def flush(self) -> None:
        """Send every queued write now, in one round trip (none when nothing is queued)."""
        batch = self.queued()
        if batch.commands:
            await self.send(batch)

    async def _flush_later(self) -> None:
        """`flush` off every request's path: a dead Redis goes to `on_down`, never raised."""
        await asyncio.sleep(FLUSH_SECONDS)
        self._due = False
        try:
            async with asyncio.timeout(CALL_TIMEOUT * 2):
                await self.flush()
        except DOWN as error:
            if self.on_down is not None:
                self.on_down(error)
        except Exception:  # a bug must show, yet not stop the sends that follow
            log.exception("sending queued writes to Redis at %s failed", self.where)

    async def aclose(self) -> None:
        """Send what is still queued (a dead Redis is not waited for), then stop."""
        if self._due:
            with contextlib.suppress(*DOWN):
                async with asyncio.timeout(CALL_TIMEOUT * 2):
                    await self.flush()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._wire is not None:
            self._wire.close()
        await self.client.aclose()


def _no_commands(batch: Batch) -> None:
    """A round trip's own commands when it carries only queued writes and reads."""


def _no_script(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")


def safe_url(url: str) -> str:
    """`host:port/db` of a Redis URL: what logs and errors may show (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 6379}{parts.path or ''}"
