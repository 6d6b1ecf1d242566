"""One contract for the key and usage stores, run against every implementation (SQLite and
a real Postgres, DESIGN §1, §10): keys, a batch of records, daily totals, retention."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from app.errors import InvalidRequest, KeyExists, NotFound
from app.team.database import open_stores
from app.team.db import MIGRATIONS, SCHEMA_VERSION, open_database, render
from app.team.keys import SECRET_PREFIX, hash_secret
from app.team.retention import PRUNE_BATCH, prune_old_records
from app.team.stores import KeyStore, UsageStore
from app.team.usage import DAY, UsageRecord
from tests.test_team_usage import NOW, record  # one way to build a record

TODAY = "2027-01-15"
YESTERDAY = "2027-01-14"

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str | Path:
    """Where the stores live: a SQLite path, or the URL of a new Postgres database."""
    if request.param == "sqlite":
        return tmp_path / "proxy.db"
    return request.getfixturevalue("pg_url")


@asynccontextmanager
async def stores(database: str | Path) -> AsyncIterator[tuple[KeyStore, UsageStore]]:
    async with open_stores(database) as opened:
        yield opened


def column(rows, name):
    return [row[name] for row in rows]


async def test_keys_are_created_listed_revoked_and_looked_up(database):
    async with stores(database) as (keys, _):
        secret = await keys.create("alice", rpm=10, models=["*:free", " "], paid=True)
        assert secret.startswith(SECRET_PREFIX) and len(secret) >= len(SECRET_PREFIX) + 32
        await keys.create("bob")
        alice = await keys.get("alice")
        assert alice.limits == {"rpm": 10, "rpd": None, "tpd": None, "concurrency": None}
        assert alice.models == ("*:free",) and alice.paid and alice.revoked is None
        assert alice.prefix == secret[:12]
        assert [k.name for k in await keys.list()] == ["alice", "bob"]

        revoked = await keys.revoke("alice")
        assert revoked.revoked is not None
        assert (await keys.revoke("alice")).revoked == revoked.revoked  # the first time stays
        with pytest.raises(KeyExists):
            await keys.create("alice")  # a revoked key's name is not reused
        with pytest.raises(NotFound):
            await keys.revoke("carol")
        with pytest.raises(InvalidRequest, match="rpm must be a whole number"):
            await keys.create("carol", rpm=2**63)
        with pytest.raises(InvalidRequest, match="invalid key name"):
            await keys.create("a b")
    async with stores(database) as (keys, _):  # another process sees the same
        assert [(k.name, k.revoked is not None) for k in await keys.list()] == [
            ("alice", True),
            ("bob", False),
        ]


async def test_only_the_secrets_hash_is_stored(database):
    async with stores(database) as (keys, _):
        secret = await keys.create("alice")
    rows = await raw(database, "SELECT hash, prefix FROM keys")
    assert rows == [(hash_secret(secret), secret[:12])]


async def test_a_batch_adds_its_records_and_the_daily_totals(database):
    batch = [
        record(),
        record(cost=0.5),
        record(served_model="b/m", cost=0.25, cache="hit", prompt_tokens=0),
        record(key="bob", status=429, served_model=None, attempts=0, prompt_tokens=0),
        record(key=None, stream=True),
        record(time=NOW - DAY, completion_tokens=7),  # yesterday
        record(time=NOW - 7 * DAY),  # a week ago
        record(key="carol", time=NOW - 3 * DAY),
    ]
    async with stores(database) as (_, usage):
        await usage.write(batch[:4])
        await usage.write(batch[4:])
        today = await usage.totals(key=None, days=1, now=NOW)
        assert today == [
            {"day": TODAY, "key": None, "model": "a/m:free", "requests": 1, "errors": 0,
             "cache_hits": 0, "prompt_tokens": 10, "completion_tokens": 5, "cost": 0.0},
            {"day": TODAY, "key": "alice", "model": "a/m:free", "requests": 2, "errors": 0,
             "cache_hits": 0, "prompt_tokens": 20, "completion_tokens": 10, "cost": 0.5},
            {"day": TODAY, "key": "alice", "model": "b/m", "requests": 1, "errors": 0,
             "cache_hits": 1, "prompt_tokens": 0, "completion_tokens": 5, "cost": 0.25},
            # Nothing answered: the model asked for; a refusal counts as an error.
            {"day": TODAY, "key": "bob", "model": "free", "requests": 1, "errors": 1,
             "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 5, "cost": 0.0},
        ]  # fmt: skip
        alice = await usage.totals(key="alice", days=2, now=NOW)
        assert [(r["day"], r["model"], r["requests"]) for r in alice] == [
            (YESTERDAY, "a/m:free", 1),
            (TODAY, "a/m:free", 2),
            (TODAY, "b/m", 1),
        ]
        assert sum(column(await usage.totals(key=None, days=8, now=NOW), "requests")) == 8
        # Daily limits count what reached an upstream or the cache, tokens of answers only.
        assert await usage.today("alice", NOW) == (3, 30)
        assert await usage.today("bob", NOW) == (0, 0)
        # When each key last called, to the end of its last day in the totals (or now).
        carol = NOW - 12 * 3600 - 2 * DAY
        week = {"alice": NOW, "bob": NOW, "carol": carol}
        assert await usage.last_used(NOW - 7 * DAY, NOW) == week
        assert await usage.last_used(NOW - DAY, NOW) == {"alice": NOW, "bob": NOW}
    assert (await raw(database, "SELECT COUNT(*) FROM usage")) == [(8,)]


async def test_totals_add_up_when_two_processes_write_at_once(database):
    """Incremented in SQL: two writers never lose each other's counts (never read, added
    and written back)."""
    async with stores(database) as (_, first), stores(database) as (_, second):
        await asyncio.gather(
            *(store.write([record(prompt_tokens=1)] * 50) for store in (first, second) * 10)
        )
        (row,) = await first.totals(key="alice", days=1, now=NOW)
    assert (row["requests"], row["prompt_tokens"]) == (1000, 1000)


async def test_retention_deletes_old_records_in_batches_and_keeps_the_totals(database):
    old = [record(time=NOW - 40 * DAY)] * (2 * PRUNE_BATCH + 500)
    async with stores(database) as (_, usage):
        await usage.write(old)
        await usage.write([record(time=NOW - 29 * DAY), record()])
        assert await usage.prune(NOW - 30 * DAY, 100) == 100  # one bounded batch
        assert await prune_old_records(usage, 30, NOW) == len(old) - 100
        assert await prune_old_records(usage, 30, NOW) == 0
        totals = await usage.totals(key="alice", days=41, now=NOW)
    assert sum(column(totals, "requests")) == len(old) + 2
    assert (await raw(database, "SELECT COUNT(*) FROM usage")) == [(2,)]


async def test_the_migration_builds_the_totals_from_records_already_there(database):
    """A database at schema 1 (records, no totals) is brought up to date on opening."""
    await create_schema_1(database, [record(), record(cache="hit"), record(key=None)])
    async with stores(database) as (_, usage):
        rows = await usage.totals(key=None, days=1, now=NOW)
    assert [(r["key"], r["requests"], r["cache_hits"]) for r in rows] == [
        (None, 1, 0),
        ("alice", 2, 1),
    ]


async def test_both_engines_reach_the_same_schema(tmp_path, pg_url):
    """The same migrations bring an empty SQLite file and an empty Postgres database to the
    same version, tables and columns. Postgres's proxy_meta holds what SQLite keeps in its
    file header (the version, the key change counter)."""
    path = tmp_path / "proxy.db"
    async with stores(path), stores(pg_url):
        pass
    connection = open_database(path)
    sqlite_version = connection.execute("PRAGMA user_version").fetchone()[0]
    names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    sqlite_schema = {
        table: [r[1] for r in connection.execute(f"PRAGMA table_info({table})")] for table in names
    }
    connection.close()
    with psycopg.connect(pg_url) as pg:
        pg_version = pg.execute("SELECT schema_version FROM proxy_meta").fetchone()[0]
        pg_schema: dict[str, list[str]] = {}
        for table, name in pg.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ):
            pg_schema.setdefault(table, []).append(name)
    assert sqlite_version == pg_version == SCHEMA_VERSION
    assert pg_schema.pop("proxy_meta") == ["id", "schema_version", "key_changes"]
    assert pg_schema == sqlite_schema
    assert set(sqlite_schema) == {"keys", "usage", "usage_daily"}


# --- helpers reaching under the stores ------------------------------------------------------


async def raw(database: str | Path, sql: str) -> list[tuple]:
    if isinstance(database, Path):
        connection = sqlite3.connect(database)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()
    async with await psycopg.AsyncConnection.connect(database) as connection:
        return await (await connection.execute(sql)).fetchall()


async def create_schema_1(database: str | Path, records: list[UsageRecord]) -> None:
    """A database as the release before the totals left it, with these records."""
    columns = "time, key, route, requested_model, served_model, attempts, status, stream, " \
        "cache, prompt_tokens, completion_tokens, cost, latency_ms, ttft_ms"  # fmt: skip
    rows = [
        (r.time, r.key, r.route, r.requested_model, r.served_model, r.attempts, r.status,
         int(r.stream), r.cache, r.prompt_tokens, r.completion_tokens, r.cost, r.latency_ms,
         r.ttft_ms)
        for r in records
    ]  # fmt: skip
    marks = ", ".join(["?"] * 14)
    if isinstance(database, Path):
        connection = sqlite3.connect(database, isolation_level=None)
        for statement in MIGRATIONS[0]:
            connection.execute(render(statement, "sqlite"))
        connection.executemany(f"INSERT INTO usage ({columns}) VALUES ({marks})", rows)
        connection.execute("PRAGMA user_version = 1")
        connection.close()
        return
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as connection:
        for statement in MIGRATIONS[0]:
            await connection.execute(render(statement, "postgres"))
        await connection.execute(
            "CREATE TABLE proxy_meta (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "schema_version INTEGER NOT NULL, key_changes BIGINT NOT NULL)"
        )
        await connection.execute("INSERT INTO proxy_meta VALUES (1, 1, 0)")
        async with connection.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO usage ({columns}) VALUES ({marks.replace('?', '%s')})", rows
            )
