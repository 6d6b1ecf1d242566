"""`Team`: the key store, key ring and usage writer over one SQLite file, built together,
and the watch that notices that file going away under them (DESIGN §7). postgres_team.py
is the same for Postgres; app code reaches either through the `Database` protocol.

Each part has its own connection: the ring must see other connections' commits through
`PRAGMA data_version`, and the writer's transactions run on a worker thread. Admin calls
and queries run on a worker thread too, one at a time, so a command holding the write lock
for a moment (`busy_timeout`) never stalls the event loop.

A connection goes on using its file after the file is deleted or replaced, unseen by any
other process. So every `WATCH_INTERVAL` (and before each admin call and readiness check)
the team compares the file it opened with the one the path names. Once they differ,
/readyz says so, admin calls answer 503, usage records wait in the writer's queue and the
key ring keeps the last keys it read (never open mode); when a database with the schema is
at the path again, all three move to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from app.errors import DatabaseError, DatabaseUnavailable
from app.team.auth import KeyRing
from app.team.db import OpenedFile, describe, file_identity, open_database, write_problem
from app.team.keys import KeyTable
from app.team.retention import Retention
from app.team.sqlite_stores import SqliteBatchSink, SqliteKeyStore, SqliteUsageStore
from app.team.usage import UsageWriter

T = TypeVar("T")

logger = logging.getLogger("openrouter_proxy.database")

WATCH_INTERVAL = 0.5  # seconds; the key ring's cadence, so a new database is used within 1 s


class Team:
    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        retention_days: int = 90,
    ) -> None:
        """Open (and migrate) the database; raise DatabaseError, one line, when unusable."""
        self.path = path
        self.label = f"database {path}"
        self.clock = clock
        (keys, ring, usage), self._file = _open(path, create=True)
        self.keys = KeyTable(keys, clock=clock)  # synchronous, for tests that set up keys
        self.key_store = SqliteKeyStore(self.keys, self.call)
        self.usage_store = SqliteUsageStore(self.keys, self.call)
        self.keyring = KeyRing(ring)
        self._sink = SqliteBatchSink(usage, self._file)
        self.usage = UsageWriter(self._sink)
        self.retention = Retention(self.usage_store, retention_days, clock)
        self.gone: str | None = None  # why the database at `path` cannot be used, if so
        self._retry_error: str | None = None  # why the last reopening failed
        self._lock = threading.Lock()
        self._closing = asyncio.Event()
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the usage writer, retention and the watch (from the app's lifespan)."""
        self.usage.start()
        self.retention.start()
        if self._watching is None:
            loop = asyncio.get_running_loop()
            self._watching = loop.create_task(self._watch(), name="database-watch")

    async def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a KeyTable method or a query on `self.keys.connection` off the event loop;
        DatabaseUnavailable (503) naming the file when it is gone or locked."""

        def locked() -> T:
            with self._lock:
                self._notice()
                if self.gone is not None:
                    raise DatabaseUnavailable(self.gone)
                try:
                    return function(*args, **kwargs)
                except sqlite3.Error as exc:
                    raise DatabaseUnavailable(str(describe(self.path, exc))) from None

        return await asyncio.to_thread(locked)

    async def reload_keys(self) -> None:
        """Read the keys now (after this process changed one: no need to wait)."""
        self.keyring.refresh()

    async def problem(self) -> str | None:
        """Why the database cannot take a write now, or None (/readyz)."""

        def check() -> str | None:
            with self._lock:
                self._notice()
                if self.gone is None:
                    return write_problem(self.keys.connection, self.path)
                if self._retry_error is None:
                    return self.gone
                return f"{self.gone} (reopening it: {self._retry_error})"

        return await asyncio.to_thread(check)

    def _notice(self) -> None:
        """Under the lock: is the path still naming the file opened? Log when it stops."""
        if self.gone is not None or (problem := self._file.problem()) is None:
            return
        self.gone = (
            f"{problem}; requests are authenticated with the keys last read from it and "
            "usage records wait in memory until a database with the schema is at "
            f"{self.path} again (restore it, or `openrouter-proxy keys create NAME` makes a "
            "new one)"
        )
        logger.error("%s", self.gone)

    async def _watch(self) -> None:
        # Never cancelled (aclose sets `_closing` and waits), so a reopening finished on its
        # thread is always handed over, never leaked.
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), WATCH_INTERVAL)
            if self._closing.is_set():
                return
            reopened = await asyncio.to_thread(self._reopen)
            if reopened is not None:
                ring, usage = reopened
                self.keyring.reconnect(ring)
                self._sink.reconnect(usage, self._file)
                logger.warning(
                    "database %s is back: keys read from it; %d queued usage records go there",
                    self.path,
                    self.usage.queue_depth,
                )

    def _reopen(self) -> tuple[sqlite3.Connection, sqlite3.Connection] | None:
        """On a thread: when the database is gone and one with the schema is at the path,
        open it, move the key store there and return the ring's and writer's connections."""
        with self._lock:
            self._notice()
            if self.gone is None:
                return None
            try:
                (keys, ring, usage), file = _open(self.path, create=False)
            except DatabaseError as error:
                if str(error) != self._retry_error:
                    self._retry_error = str(error)
                    logger.info("still waiting for the database: %s", error)
                return None
            self.keys.reconnect(keys)
            self._file = file
            self.gone = self._retry_error = None
            return ring, usage

    async def aclose(self) -> None:
        """Stop the watch and retention, write every pending usage record, then close the
        connections."""
        await self.retention.aclose()
        if self._watching is not None:
            self._closing.set()
            await self._watching
            self._watching = None
        await self.usage.aclose()
        self._sink.close()
        self.keyring.close()
        self.keys.close()


def _open(path: Path, *, create: bool) -> tuple[tuple[sqlite3.Connection, ...], OpenedFile]:
    """The three connections to the file at `path`, and which file that is. A file swapped
    while they were opened (they might point at two files) is a DatabaseError: try later."""
    before = file_identity(path)
    connections: list[sqlite3.Connection] = []
    try:
        for _ in range(3):
            connections.append(open_database(path, create=create))
        file = OpenedFile(path, file_identity(path))
        if before is not None and before != file.identity:
            raise DatabaseError(f"database {path} changed while it was being opened")
    except DatabaseError:
        for connection in connections:
            connection.close()
        raise
    keys, ring, usage = connections
    return (keys, ring, usage), file
