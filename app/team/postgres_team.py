"""`PostgresTeam`: keys and usage in Postgres for replicas on several machines (DESIGN §12),
the counterpart of store.py's `Team` behind the same `Database` protocol.

Start-up connects and migrates (one line naming host:port and exit ≠ 0 when it cannot).
While serving, a task polls the key change counter every KEY_POLL_INTERVAL, off the request
path, so a key created or revoked anywhere is used here within a second. When Postgres
goes away, /readyz names it, requests are authenticated with the keys last read (never open
mode), usage records wait in the writer's bounded queue, and the pool reconnects by itself
when the server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from app.errors import DatabaseUnavailable
from app.team.auth import KeyRing
from app.team.postgres import (
    CONNECT_TIMEOUT,
    PostgresDatabase,
    connect,
    new_pool,
    probe,
    target_of,
)
from app.team.postgres_stores import PostgresKeyStore, PostgresUsageStore
from app.team.retention import Retention
from app.team.usage import UsageWriter

logger = logging.getLogger("openrouter_proxy.database")

KEY_POLL_INTERVAL = 0.5  # seconds; DESIGN §12: a key change reaches every replica within 1 s
READY_TIMEOUT = 2.0  # seconds /readyz waits for Postgres to answer


class PostgresTeam:
    def __init__(
        self, url: str, *, clock: Callable[[], float] = time.time, retention_days: int = 90
    ) -> None:
        """Nothing is opened here (the pool needs the server's loop): `start()` does it."""
        self.target = target_of(url)
        self.label = self.target.label
        self.clock = clock
        self._db = PostgresDatabase(new_pool(self.target), self.target)
        self.key_store = PostgresKeyStore(self._db, clock)
        self.usage_store = PostgresUsageStore(self._db)
        self.keyring = KeyRing(None)
        self.usage = UsageWriter(self.usage_store)
        self.retention = Retention(self.usage_store, retention_days, clock)
        self.gone: str | None = None  # why the last poll failed, while it does
        self._changes: int | None = None
        self._closing = asyncio.Event()
        self._polling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and migrate (DatabaseError when Postgres cannot be used), read the keys,
        then start the writer, retention and the key poller."""
        # The pool logs each failed reconnection attempt (several a second, on several
        # lines); the outage is logged here once when it starts and once when it ends.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        await (await connect(self.target)).close()
        await self._db.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        await self.reload_keys()
        self.usage.start()
        self.retention.start()
        self._polling = asyncio.get_running_loop().create_task(self._poll(), name="key-poll")

    async def reload_keys(self) -> None:
        """Read the key set when the counter moved (read before the keys: a change made in
        between is read again at the next poll, never missed)."""
        changes = await self.key_store.changes()
        if changes != self._changes:
            self.keyring.replace(await self.key_store.with_hashes())
            self._changes = changes

    async def _poll(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), KEY_POLL_INTERVAL)
            if self._closing.is_set():
                return
            try:
                await self.reload_keys()
            except DatabaseUnavailable as error:
                if self.gone is None:
                    why = await probe(self.target, READY_TIMEOUT) or error.message
                    self.gone = f"{self.label} (PROXY_DATABASE_URL) cannot be used: {why}"
                    logger.error(
                        "%s; requests are authenticated with the keys last read and usage "
                        "records wait in memory until it answers",
                        self.gone,
                    )
                continue
            if self.gone is not None:
                self.gone = None
                logger.warning(
                    "%s answers again: keys read from it; %d queued usage records go there",
                    self.label,
                    self.usage.queue_depth,
                )

    async def problem(self) -> str | None:
        """Why Postgres cannot take a write now, or None (/readyz)."""
        why = await probe(self.target, READY_TIMEOUT)
        if why is None:
            return None
        return (
            f"{self.label} (PROXY_DATABASE_URL) cannot be used: {why}; requests are "
            f"authenticated with the keys last read and {self.usage.queue_depth} usage "
            "records wait in memory until it answers"
        )

    async def aclose(self) -> None:
        """Stop polling and retention, write every pending usage record, close the pool."""
        self._closing.set()
        if self._polling is not None:
            await self._polling
            self._polling = None
        await self.retention.aclose()
        await self.usage.aclose()
        await self._db.pool.close()
