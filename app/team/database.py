"""Which database holds keys and usage: SQLite at PROXY_DB_PATH (the default) or Postgres at
PROXY_DATABASE_URL (DESIGN §3, §12). The server gets a `Database` (store.py's `Team` or
postgres_team.py's `PostgresTeam`); a command gets the two stores (`open_stores`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from app.config import Settings
from app.team.auth import KeyRing
from app.team.stores import KeyStore, UsageStore
from app.team.usage import UsageWriter


class Database(Protocol):
    """What the server uses of its database: the stores, the in-memory key ring that
    authenticates requests, the usage writer, and readiness."""

    @property
    def label(self) -> str:
        """How messages name it: "database PATH" or "Postgres at HOST:PORT"."""

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def keyring(self) -> KeyRing: ...

    @property
    def usage(self) -> UsageWriter: ...

    @property
    def key_store(self) -> KeyStore: ...

    @property
    def usage_store(self) -> UsageStore: ...

    async def start(self) -> None:
        """From the lifespan: open what needs the loop, start the background tasks."""

    async def reload_keys(self) -> None:
        """Read the keys now (this process changed one)."""

    async def problem(self) -> str | None:
        """Why it cannot take a write now, or None (/readyz)."""

    async def aclose(self) -> None:
        """Write every pending record, then close."""


def open_team(settings: Settings, *, clock: Callable[[], float] = time.time) -> Database:
    """The server's database; SQLite is opened (and migrated) here, Postgres in `start`."""
    days = settings.usage_retention_days
    if settings.database_url is not None:
        from app.team.postgres_team import PostgresTeam

        return PostgresTeam(
            settings.database_url.get_secret_value(), clock=clock, retention_days=days
        )
    from app.team.store import Team

    return Team(settings.db_path, clock=clock, retention_days=days)


@asynccontextmanager
async def open_stores(url: str | Path) -> AsyncIterator[tuple[KeyStore, UsageStore]]:
    """The key and usage stores of a database, migrated, for a command; `url` is a
    postgresql:// URL or a SQLite path. DatabaseError, one line, when it cannot be used."""
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        from app.team.postgres import (
            PostgresDatabase,
            connect,
            new_pool,
            target_of,
        )
        from app.team.postgres_stores import PostgresKeyStore, PostgresUsageStore

        target = target_of(url)
        await (await connect(target)).close()
        async with new_pool(target, size=1) as pool:
            db = PostgresDatabase(pool, target)
            yield PostgresKeyStore(db, time.time), PostgresUsageStore(db)
        return
    from app.team.db import open_database
    from app.team.keys import KeyTable
    from app.team.sqlite_stores import SqliteKeyStore, SqliteUsageStore, direct

    path = Path(url)
    table = KeyTable(open_database(path))
    try:
        yield SqliteKeyStore(table, direct(path)), SqliteUsageStore(table, direct(path))
    finally:
        table.close()


def database_of(settings: Settings) -> str | Path:
    """The configured database as `open_stores` takes it."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return settings.db_path


async def keys_exist(settings: Settings) -> bool:
    """Has any client key been created (revoked ones count: open mode ends with the first)?
    Asked before `serve` binds, so it also proves the database can be used at all."""
    async with open_stores(database_of(settings)) as (keys, _):
        return bool(await keys.list())
