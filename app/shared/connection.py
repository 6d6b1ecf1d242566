"""One Redis client for every shared store: one connection pool, a short timeout on every
call (no request hangs on a dead Redis), and the prefix every key is written under."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

# Every call (connect, send, read) gives up after this: Redis on a LAN answers in < 1 ms.
CALL_TIMEOUT = 0.25


class Shared:
    """The client and the key prefix (PROXY_REDIS_URL, PROXY_REDIS_PREFIX)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=CALL_TIMEOUT,
            socket_connect_timeout=CALL_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a retry would double the wait on a dead Redis
        )
        self.prefix = prefix
        self.where = safe_url(url)
        self._tasks: set[asyncio.Task[None]] = set()

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

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()


def safe_url(url: str) -> str:
    """`host:port/db` of a Redis URL: what logs and errors may show (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 6379}{parts.path or ''}"
