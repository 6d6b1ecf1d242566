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
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

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

    def add(self, pipe: Pipeline) -> None:
        """Put the one command of the read into `pipe`."""

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
        self.prefix = prefix
        self.where = safe_url(url)
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: list[Callable[[Pipeline], None]] = []
        self._reads: list[Read] = []
        self._due = False  # a send of the queued writes is scheduled
        # Told when a write nobody waits for finds Redis away (the failover's switch).
        self.on_down: Callable[[BaseException], None] | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> AsyncScript:
        """A Lua script run by its SHA (sent once, then by digest)."""
        return self.client.register_script(source)

    def background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` (a renewal, a heartbeat) until it ends or `aclose`."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def queue(self, move: Callable[[Pipeline], None]) -> None:
        """Register a store's queue: `move` puts its queued writes into a pipeline (and
        forgets them), whichever round trip goes first."""
        self._queues.append(move)

    def queued_into(self, pipe: Pipeline) -> None:
        """Every store's queued writes into `pipe`, to go ahead of what it sends."""
        for move in self._queues:
            move(pipe)

    def read_along(self, read: Read) -> None:
        """Send `read` with the next round trip `trip` makes (the admission's)."""
        self._reads.append(read)

    def unread(self, read: Read) -> None:
        """`read` is no longer wanted (no round trip took it): forget it."""
        with contextlib.suppress(ValueError):
            self._reads.remove(read)

    async def trip(self, commands: Callable[[Pipeline], object]) -> list[Any]:
        """One round trip: the queued writes, then `commands`, then the expected reads.
        Returns the results of `commands`, an error as its value (a script Redis lost
        answers NoScriptError: the caller runs it again on its own)."""
        reads, self._reads = self._reads, []
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                self.queued_into(pipe)
                first = len(pipe)
                commands(pipe)
                own = len(pipe)
                for read in reads:
                    read.add(pipe)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as error:
            for read in reads:
                read.deliver(error)
            raise
        for read, result in zip(reads, results[own:], strict=True):
            read.deliver(result)
        for result in results[:first]:
            if isinstance(result, Exception):  # a queued write Redis refused: a bug
                log.error("a queued write to Redis at %s failed: %s", self.where, result)
        return list(results[first:own])

    def later(self) -> None:
        """Send the queued writes in `FLUSH_SECONDS`, unless a send is due already."""
        if not self._due:
            self._due = True
            self.background(self._flush_later())

    async def flush(self) -> None:
        """Send every queued write now, in one round trip (none when nothing is queued)."""
        async with self.client.pipeline(transaction=False) as pipe:
            self.queued_into(pipe)
            if len(pipe):
                await pipe.execute()

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
        await self.client.aclose()


def safe_url(url: str) -> str:
    """`host:port/db` of a Redis URL: what logs and errors may show (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 6379}{parts.path or ''}"
