"""The key and usage stores on SQLite (the default engine, DESIGN §7).

SQLite is synchronous: each store method is a short function on a connection, run by a
`Runner` off the event loop. The server's runner (`Team.call`) holds the team's lock,
notices a database deleted or replaced under it and answers DatabaseUnavailable; the
command line's (`direct`) calls the function at once and names the file on failure.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.errors import DatabaseError
from app.team.db import OpenedFile, describe
from app.team.keys import ApiKey, KeyTable
from app.team.stores import (
    ADD_TOTALS,
    INSERT_RECORD,
    LAST_USED,
    PRUNE,
    TODAY,
    daily_totals,
    last_used_params,
    last_used_time,
    record_row,
    totals_query,
    totals_row,
)
from app.team.usage import UsageRecord, utc_day_start

T = TypeVar("T")


class Runner(Protocol):
    def __call__(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        """Run `function(*args, **kwargs)` on the store's connection, off the loop."""


def direct(path: Path) -> Runner:
    """The command line's runner: at once (a command has nothing else to do meanwhile); a
    SQLite failure is one DatabaseError line naming the file."""

    async def run(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except sqlite3.Error as exc:
            raise describe(path, exc) from None

    return run


def write_batch(db: sqlite3.Connection, batch: Sequence[UsageRecord]) -> None:
    """The records and the daily totals they add, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(INSERT_RECORD, map(record_row, batch))
        db.executemany(ADD_TOTALS, daily_totals(batch))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _prune(db: sqlite3.Connection, before: float, limit: int) -> int:
    # Autocommit: the DELETE is its own short transaction.
    return db.execute(PRUNE, (before, limit)).rowcount


class SqliteKeyStore:
    """KeyStore over a KeyTable, each call through the runner."""

    def __init__(self, table: KeyTable, run: Runner) -> None:
        self._table = table
        self._run = run

    async def create(
        self,
        name: str,
        *,
        rpm: int | None = None,
        rpd: int | None = None,
        tpd: int | None = None,
        concurrency: int | None = None,
        models: Iterable[str] = (),
        paid: bool = False,
    ) -> str:
        limits = {"rpm": rpm, "rpd": rpd, "tpd": tpd, "concurrency": concurrency}
        return await self._run(self._table.create, name, models=models, paid=paid, **limits)

    async def revoke(self, name: str) -> ApiKey:
        return await self._run(self._table.revoke, name)

    async def get(self, name: str) -> ApiKey:
        return await self._run(self._table.get, name)

    async def list(self) -> builtins.list[ApiKey]:
        return await self._run(self._table.list)


class SqliteUsageStore:
    """UsageStore on the connection of `table` (reads, retention; `write` for tests and
    `db copy`: the server writes through SqliteBatchSink, on its own connection)."""

    def __init__(self, table: KeyTable, run: Runner) -> None:
        self._table = table
        self._run = run

    async def write(self, batch: Sequence[UsageRecord]) -> None:
        await self._run(lambda: write_batch(self._table.connection, batch))

    async def totals(self, *, key: str | None, days: int, now: float) -> list[dict[str, Any]]:
        sql, params = totals_query(key, days, now)
        rows = await self._run(lambda: self._table.connection.execute(sql, params).fetchall())
        return [totals_row(row) for row in rows]

    async def today(self, key: str, now: float) -> tuple[int, int]:
        params = (key, utc_day_start(now))
        row = await self._run(lambda: self._table.connection.execute(TODAY, params).fetchone())
        return int(row[0]), int(row[1])

    async def last_used(self, since: float, now: float) -> dict[str, float]:
        params = last_used_params(since)
        rows = await self._run(lambda: self._table.connection.execute(LAST_USED, params).fetchall())
        return {key: last_used_time(day, now) for key, day in rows}

    async def prune(self, before: float, limit: int) -> int:
        return await self._run(lambda: _prune(self._table.connection, before, limit))


class SqliteBatchSink:
    """The server's usage writes: its own connection, on a worker thread, and only while
    the path still names the file the connection opened (checked again after the commit:
    rows that went to a file deleted meanwhile stay queued, for the connection `reconnect`
    gives next)."""

    def __init__(self, connection: sqlite3.Connection, file: OpenedFile) -> None:
        self._db = connection
        self._file = file
        self._next: tuple[sqlite3.Connection, OpenedFile] | None = None

    def reconnect(self, connection: sqlite3.Connection, file: OpenedFile) -> None:
        """Write to this connection from the next batch on (the old one is closed then,
        never while a thread writes on it)."""
        if self._next is not None:
            self._next[0].close()
        self._next = (connection, file)

    async def write(self, batch: list[UsageRecord]) -> None:
        if self._next is not None:
            self._db.close()
            (self._db, self._file), self._next = self._next, None
        await asyncio.to_thread(self._write, self._db, self._file, batch)

    @staticmethod
    def _write(db: sqlite3.Connection, file: OpenedFile, batch: list[UsageRecord]) -> None:
        if (problem := file.problem()) is not None:
            raise DatabaseError(problem)
        try:
            write_batch(db, batch)
        except sqlite3.Error as exc:
            raise describe(file.path, exc) from None
        if (problem := file.problem()) is not None:
            raise DatabaseError(f"{problem} (during the write)")

    def close(self) -> None:
        self._db.close()
        if self._next is not None:
            self._next[0].close()
