"""PROXY_USAGE_RETENTION_DAYS on a running server (DESIGN §3, §7): records older than that
are deleted by its background task, the daily totals are kept, on either engine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from app.team.database import open_stores
from app.team.retention import PRUNE_BATCH
from app.team.usage import DAY, UsageRecord
from tests.conftest import ProxyFactory
from tests.test_e2e_database import wait_for
from tests.test_store_contract import raw

ADMIN = "admin-secret-for-retention"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "proxy.db"
    return request.getfixturevalue("pg_url")


def record(time: float) -> UsageRecord:
    return UsageRecord(time, "alice", "/v1/chat/completions", "free", "a/m:free", 1, 200,
                       False, "miss", 3, 4, None, 9.0, None)  # fmt: skip


async def fill(database: str | Path, now: float) -> None:
    async with open_stores(database) as (_, usage):
        await usage.write([record(now - 31 * DAY)] * (2 * PRUNE_BATCH + 10))
        await usage.write([record(now - 29 * DAY), record(now)])


def records(database: str | Path) -> int:
    return int(asyncio.run(raw(database, "SELECT COUNT(*) FROM usage"))[0][0])


def test_the_server_deletes_records_past_retention_and_keeps_the_totals(
    start_proxy: ProxyFactory, database: str | Path
):
    asyncio.run(fill(database, time.time()))
    where = {"database_url": database} if isinstance(database, str) else {"db_path": database}
    with start_proxy(usage_retention_days=30, admin_key=ADMIN, **where) as proxy:
        wait_for(lambda: records(database) == 2, "the records older than 30 days to go")
        rows = httpx.get(
            f"{proxy.url}/admin/usage",
            params={"days": 40},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()["data"]
    assert sum(row["requests"] for row in rows) == 2 * PRUNE_BATCH + 12
