"""`openrouter-proxy db copy FROM_URL TO_URL` (DESIGN §2): keys (with their hashes, so every
secret keeps working), usage records and daily totals, from SQLite to Postgres or back.

Both databases are migrated first, so they have the same tables and columns. The target
must hold no keys or usage; everything is written in one transaction, so a copy that fails
half-way leaves it empty. Record ids are not copied (the target numbers its own rows).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from app.errors import DatabaseError, ProxyError
from app.team.db import describe, open_database

CHUNK = 5_000  # records read and written per round trip
# What is copied, and in which order the rows are read (records by id: their order).
TABLES = (("keys", "created, name"), ("usage", "id"), ("usage_daily", "day, key, model"))


class CopyError(ProxyError):
    """db copy cannot go on (a URL it does not know, a target that is not empty)."""

    status_code = 400
    type = "invalid_request_error"
    code = "copy_refused"


class Tables(Protocol):
    """Row access to one migrated database, engine-neutral (`?` placeholders)."""

    name: str

    async def columns(self, table: str) -> list[str]: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert inside the open transaction (started by the first insert)."""

    async def commit(self) -> None: ...


class SqliteTables:
    def __init__(self, path: Path) -> None:
        self.name = f"database {path}"
        self._path = path
        self._db = open_database(path)

    async def columns(self, table: str) -> list[str]:
        return [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise describe(self._path, exc) from None

    async def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        marks = ", ".join("?" * len(columns))
        try:
            self._db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )
        except sqlite3.Error as exc:
            raise describe(self._path, exc) from None

    async def commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class PostgresTables:
    def __init__(self, connection: Any, label: str) -> None:
        self.name = label
        self._db = connection
        self._open = False

    async def columns(self, table: str) -> list[str]:
        rows = await self.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [row[0] for row in rows]

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        from app.team.postgres import pg

        cursor = await self._db.execute(pg(sql), params)
        rows: list[tuple[Any, ...]] = await cursor.fetchall()
        return rows

    async def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not self._open:
            await self._db.execute("BEGIN")
            self._open = True
        marks = ", ".join(["%s"] * len(columns))
        async with self._db.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )

    async def commit(self) -> None:
        from app.team.postgres import BUMP_KEY_CHANGES

        if self._open:
            await self._db.execute(BUMP_KEY_CHANGES)  # running replicas read the keys
            await self._db.execute("COMMIT")
            self._open = False


@asynccontextmanager
async def open_tables(url: str) -> AsyncIterator[Tables]:
    """The database at `url` (sqlite:///PATH or postgresql://…), migrated."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        from app.team.postgres import connect, target_of

        target = target_of(url)
        connection = await connect(target)
        try:
            yield PostgresTables(connection, target.label)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"{target.label} (db copy) cannot be used: {target.reason(exc)}"
            ) from None
        finally:
            await connection.close()
        return
    if not url.startswith("sqlite:///"):
        raise CopyError(
            f"db copy takes sqlite:///PATH or postgresql://… URLs, got {url.split('://', 1)[0]!r}"
        )
    tables = SqliteTables(Path(url.removeprefix("sqlite:///")))
    try:
        yield tables
    finally:
        tables.close()


async def copy_database(source_url: str, target_url: str) -> dict[str, int]:
    """Copy every key, record and daily total; how many of each."""
    async with open_tables(source_url) as source, open_tables(target_url) as target:
        for table, _ in TABLES:
            if await target.fetch(f"SELECT 1 FROM {table} LIMIT 1"):
                raise CopyError(
                    f"{target.name} already holds {table} rows; db copy writes only into "
                    "an empty database (a new file, or a new Postgres database)"
                )
        counts: dict[str, int] = {}
        for table, order in TABLES:
            columns = [c for c in await source.columns(table) if c != "id"]
            counts[table] = 0
            async for rows in _chunks(source, table, columns, order):
                await target.insert(table, columns, rows)
                counts[table] += len(rows)
        await target.commit()
    return counts


async def _chunks(
    source: Tables, table: str, columns: list[str], order: str
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The rows of `table`, CHUNK at a time (records by id, so memory stays bounded)."""
    listed = ", ".join(columns)
    if table != "usage":
        rows = await source.fetch(f"SELECT {listed} FROM {table} ORDER BY {order}")
        if rows:
            yield rows
        return
    last = -1
    while True:
        rows = await source.fetch(
            f"SELECT id, {listed} FROM usage WHERE id > ? ORDER BY id LIMIT ?", (last, CHUNK)
        )
        if not rows:
            return
        last = rows[-1][0]
        yield [row[1:] for row in rows]
