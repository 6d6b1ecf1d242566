"""Keys and usage in Postgres (`PROXY_DATABASE_URL`, DESIGN §7, §12), through psycopg 3 and
its connection pool (chosen by measurement: bench/README.md, "Postgres driver").

The schema and migrations are db.py's, rendered for Postgres; `proxy_meta` holds what
SQLite keeps in its file header: the schema version (`PRAGMA user_version`) and a key
change counter (`PRAGMA data_version`), bumped in the same transaction as each key change
so that every replica, polling it, sees the change. Every failure is one line naming the
server as host:port, never with the URL's password.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from app.errors import DatabaseError, DatabaseUnavailable
from app.team.db import MIGRATIONS, SCHEMA_VERSION, render

CONNECT_TIMEOUT = 5  # seconds to reach the server (libpq's connect_timeout)
POOL_TIMEOUT = 3.0  # seconds a call waits for a pooled connection before a 503
POOL_SIZE = 4  # the writer, the key poller, retention and an admin call at once
# Seconds the pool keeps retrying a lost connection in the background (with backoff, 1 s
# then doubling) before it gives up and lets the next call try afresh: short, so that a
# server back after a long outage is used within seconds, not after a long backoff.
RECONNECT_TIMEOUT = 2.0
MIGRATION_LOCK = 0x6F72_7078  # pg_advisory_xact_lock id: replicas starting at once migrate once

CREATE_META = """CREATE TABLE IF NOT EXISTS proxy_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    key_changes BIGINT NOT NULL
)"""
BUMP_KEY_CHANGES = "UPDATE proxy_meta SET key_changes = key_changes + 1"
KEY_CHANGES = "SELECT key_changes FROM proxy_meta"


def pg(sql: str) -> str:
    """A statement written for both engines, with psycopg's placeholders."""
    return sql.replace("?", "%s")


@dataclass(frozen=True, slots=True)
class Target:
    """Where PROXY_DATABASE_URL points, fit to show: host:port, never the password."""

    url: str
    where: str

    @property
    def label(self) -> str:
        return f"Postgres at {self.where}"

    def reason(self, exc: BaseException) -> str:
        """libpq's reason for a failure, on one line, without the password."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
        text = text.rsplit(" failed: ", 1)[-1]  # "connection to server at … failed: why"
        password = conninfo_to_dict(self.url).get("password")
        return text.replace(str(password), "***") if password else text


def target_of(url: str) -> Target:
    """Parse the URL (DatabaseError, one line, when libpq cannot read it)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        raise DatabaseError(
            "PROXY_DATABASE_URL is not a valid postgresql:// URL (expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
        ) from None
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or 5432)
    return Target(url, f"{host}:{port}")


async def connect(target: Target) -> AsyncConnection[Any]:
    """One connection, migrated; DatabaseError naming the server when it cannot be used."""
    try:
        connection = await AsyncConnection.connect(
            target.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot reach {target.label} (PROXY_DATABASE_URL): {target.reason(exc)}"
        ) from None
    try:
        await migrate(connection, target)
    except BaseException:
        await connection.close()
        raise
    return connection


async def migrate(connection: AsyncConnection[Any], target: Target) -> None:
    """Apply the missing migrations in one transaction (DDL is transactional in Postgres),
    under an advisory lock so that replicas starting together do it once."""
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await connection.execute(CREATE_META)
            await connection.execute(
                "INSERT INTO proxy_meta VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING"
            )
            cursor = await connection.execute("SELECT schema_version FROM proxy_meta")
            version = int((await cursor.fetchone() or (0,))[0])
            if version > SCHEMA_VERSION:
                raise DatabaseError(
                    f"{target.label} has schema version {version}, newer than this "
                    f"openrouter-proxy knows ({SCHEMA_VERSION}); upgrade openrouter-proxy"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    await connection.execute(render(statement, "postgres"))
            # Written even when already current: a read-only server fails here, not later.
            await connection.execute("UPDATE proxy_meta SET schema_version = %s", (SCHEMA_VERSION,))
    except psycopg.Error as exc:
        raise DatabaseError(
            f"{target.label} (PROXY_DATABASE_URL) cannot be used: {target.reason(exc)}"
        ) from None


def new_pool(target: Target, *, size: int = POOL_SIZE) -> AsyncConnectionPool[Any]:
    """The pool (opened by the caller, in its loop). `check` tests a connection before
    handing it out, so the first call after a server restart does not fail on a dead one."""
    return AsyncConnectionPool(
        target.url,
        min_size=1,
        max_size=size,
        open=False,
        timeout=POOL_TIMEOUT,
        reconnect_timeout=RECONNECT_TIMEOUT,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
        check=AsyncConnectionPool.check_connection,
        name="openrouter-proxy",
    )


async def probe(target: Target, timeout: float) -> str | None:
    """Why the server cannot take a write now, or None: a connection of its own, so the
    answer is the server's state now and libpq's reason (never the pool's backoff)."""
    try:
        async with asyncio.timeout(timeout):
            connection = await AsyncConnection.connect(
                target.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
            try:
                cursor = await connection.execute("SELECT pg_is_in_recovery()")
                standby = bool((await cursor.fetchone() or (False,))[0])
            finally:
                await connection.close()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except psycopg.Error as exc:
        return target.reason(exc)
    return "it is a read-only standby" if standby else None


class PostgresDatabase:
    """A pool and its target; `connection()` turns every driver failure into
    DatabaseUnavailable (503 on the server, one line on the command line)."""

    def __init__(self, pool: AsyncConnectionPool[Any], target: Target) -> None:
        self.pool = pool
        self.target = target

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        try:
            async with self.pool.connection() as connection:
                yield connection
        except psycopg.Error as exc:
            raise DatabaseUnavailable(self.unavailable(exc)) from None

    def unavailable(self, exc: BaseException) -> str:
        return f"{self.target.label} (PROXY_DATABASE_URL) cannot be used: {self.target.reason(exc)}"

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.connection() as connection:
            cursor = await connection.execute(pg(sql), params)
            return await cursor.fetchall()
