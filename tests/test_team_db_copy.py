"""`openrouter-proxy db copy FROM_URL TO_URL` (DESIGN §2): keys and usage from a SQLite file
to Postgres and back, by the real command line, and the copied keys working on a server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from app.main import create_app
from app.team.database import open_stores
from app.team.usage import DAY, UsageRecord
from tests.conftest import make_settings
from tests.live_server import LiveServer
from tests.pg import PASSWORD
from tests.test_team_cli import ROOT, one_error_line

NOW = 1_800_000_000.0 - (1_800_000_000 % DAY) + 12 * 3600


def run(*args: str, database: str | Path) -> subprocess.CompletedProcess[str]:
    """The command line on `database` (a SQLite path or a postgresql:// URL)."""
    setting = "PROXY_DATABASE_URL" if isinstance(database, str) else "PROXY_DB_PATH"
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), setting: str(database)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert PASSWORD not in result.stdout + result.stderr
    return result


def listing(database: str | Path) -> tuple[list[dict], list[dict]]:
    """`keys list --json` and `usage --json` over every day."""
    keys = run("keys", "list", "--json", database=database)
    usage = run("usage", "--json", "--days", "3650", database=database)
    assert keys.returncode == 0 and usage.returncode == 0, keys.stderr + usage.stderr
    return json.loads(keys.stdout), json.loads(usage.stdout)


def record(time: float, key: str | None, model: str) -> UsageRecord:
    return UsageRecord(time, key, "/v1/chat/completions", "free", model, 1, 200, True, "miss",
                       3, 4, 0.5, 9.0, 2.0)  # fmt: skip


async def fill(path: Path) -> None:
    """Records over three days; then the oldest are pruned, so the totals hold more than
    the records (what a copy of the records alone would lose)."""
    async with open_stores(path) as (_, usage):
        await usage.write([record(NOW - 400 * DAY, "alice", "a/m:free")] * 5)
        await usage.write([record(NOW - DAY, "alice", "b/m"), record(NOW, None, "a/m:free")])
        assert await usage.prune(NOW - 300 * DAY, 100) == 5


def test_keys_and_usage_go_to_postgres_and_back(tmp_path: Path, pg_url: str):
    source = tmp_path / "source.db"
    alice = run("keys", "create", "alice", "--rpm", "5", "--models", "*:free", database=source)
    assert run("keys", "create", "bob", "--paid", database=source).returncode == 0
    assert run("keys", "revoke", "bob", database=source).returncode == 0
    asyncio.run(fill(source))
    before = listing(source)
    assert sum(row["requests"] for row in before[1]) == 7

    copied = run("db", "copy", f"sqlite:///{source}", pg_url, database=source)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.strip() == "copied 2 keys, 2 usage records and 3 daily totals"
    assert listing(pg_url) == before

    # The copied hash authenticates the secret on a server using Postgres.
    with LiveServer(create_app(make_settings(database_url=pg_url))) as server:
        answer = httpx.get(
            f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {alice.stdout.strip()}"}
        )
    assert answer.status_code == 200 and answer.json()["key"] == "alice"

    back = tmp_path / "back.db"
    assert run("db", "copy", pg_url, f"sqlite:///{back}", database=source).returncode == 0
    assert listing(back) == before


def test_a_copy_into_a_database_that_is_not_empty_is_refused(tmp_path: Path, pg_url: str):
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    assert run("keys", "create", "alice", database=source).returncode == 0
    assert run("keys", "create", "carol", database=target).returncode == 0
    refused = run("db", "copy", f"sqlite:///{source}", f"sqlite:///{target}", database=source)
    line = one_error_line(refused)
    assert f"database {target} already holds keys rows" in line
    assert [key["name"] for key in listing(target)[0]] == ["carol"]  # untouched

    wrong = run("db", "copy", f"mysql://u:{PASSWORD}@h/db", pg_url, database=source)
    assert "db copy takes sqlite:///PATH or postgresql://" in one_error_line(wrong)
