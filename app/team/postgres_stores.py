"""The key and usage stores on Postgres (DESIGN §10): the same statements as SQLite's
(`team/stores.py`, `team/keys.py`) with `%s` placeholders, run through one pool."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg import errors

from app.team.keys import (
    INSERT_KEY,
    REVOKE_KEY,
    SELECT_KEY,
    SELECT_KEYS,
    ApiKey,
    key_exists,
    key_from_row,
    new_key,
    no_such_key,
)
from app.team.postgres import BUMP_KEY_CHANGES, KEY_CHANGES, PostgresDatabase, pg
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


class PostgresKeyStore:
    """KeyStore on Postgres; each change bumps `proxy_meta.key_changes` in its transaction."""

    def __init__(self, db: PostgresDatabase, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

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
        secret, row = new_key(name, self._clock(), models=models, paid=paid, **limits)
        async with self._db.connection() as connection:
            try:
                async with connection.transaction():
                    await connection.execute(pg(INSERT_KEY), row)
                    await connection.execute(BUMP_KEY_CHANGES)
            except errors.UniqueViolation:
                raise key_exists(name) from None
        return secret

    async def revoke(self, name: str) -> ApiKey:
        async with self._db.connection() as connection, connection.transaction():
            cursor = await connection.execute(pg(REVOKE_KEY), (self._clock(), name))
            if cursor.rowcount:
                await connection.execute(BUMP_KEY_CHANGES)
        return await self.get(name)

    async def get(self, name: str) -> ApiKey:
        rows = await self._db.fetch(SELECT_KEY, (name,))
        if not rows:
            raise no_such_key(name)
        return key_from_row(rows[0])

    async def list(self) -> builtins.list[ApiKey]:
        return [key for _, key in await self.with_hashes()]

    async def with_hashes(self) -> builtins.list[tuple[str, ApiKey]]:
        """Every key with its hash, oldest first (the key ring's snapshot)."""
        return [(row[0], key_from_row(row[1:])) for row in await self._db.fetch(SELECT_KEYS)]

    async def changes(self) -> int:
        """The key change counter: it moves whenever a key is created or revoked."""
        return int((await self._db.fetch(KEY_CHANGES))[0][0])


def _pg_row(record: UsageRecord) -> tuple[Any, ...]:
    # Postgres will not put a boolean in a BIGINT column; SQLite stores True as 1.
    return tuple(int(v) if isinstance(v, bool) else v for v in record_row(record))


class PostgresUsageStore:
    """UsageStore on Postgres; also the server's BatchSink."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def write(self, batch: Sequence[UsageRecord]) -> None:
        async with self._db.connection() as connection:
            async with connection.transaction(), connection.cursor() as cursor:
                await cursor.executemany(pg(INSERT_RECORD), [_pg_row(r) for r in batch])
                await cursor.executemany(pg(ADD_TOTALS), daily_totals(batch))

    async def totals(self, *, key: str | None, days: int, now: float) -> list[dict[str, Any]]:
        sql, params = totals_query(key, days, now)
        return [totals_row(row) for row in await self._db.fetch(sql, params)]

    async def today(self, key: str, now: float) -> tuple[int, int]:
        (row,) = await self._db.fetch(TODAY, (key, utc_day_start(now)))
        return int(row[0]), int(row[1])

    async def last_used(self, since: float, now: float) -> dict[str, float]:
        rows = await self._db.fetch(LAST_USED, last_used_params(since))
        return {key: last_used_time(day, now) for key, day in rows}

    async def prune(self, before: float, limit: int) -> int:
        async with self._db.connection() as connection:
            cursor = await connection.execute(pg(PRUNE), (before, limit))
            return cursor.rowcount
