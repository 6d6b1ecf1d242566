"""`python -m bench.usage_query`: the query behind `usage --days 14` over 1,000,000 usage
records, on SQLite and on Postgres (issue 26: under 200 ms on either engine).

Each engine gets a new database with the schema, 1,000,000 records over the last 90 days
(the default retention), 20 keys and 10 models, and the daily totals built from them by
migration 2's own statement (what a database that grew under the proxy holds too). Then:
the store's `totals(days=14)` call, timed 20 times, and the command itself
(`python -m app usage --days 14 --json`, a new process) beside `python -m app --version`,
its start-up alone.

Postgres: `--postgres URL` (an empty database), or a throwaway cluster started from
/usr/lib/postgresql/*/bin (tests/pg.py) when none is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from app.team.database import open_stores
from app.team.db import MIGRATIONS, open_database, render
from app.team.usage import DAY

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    "time, key, route, requested_model, served_model, attempts, status, stream, cache, "
    "prompt_tokens, completion_tokens, cost, latency_ms, ttft_ms"
)
BACKFILL = MIGRATIONS[1][1]  # INSERT INTO usage_daily … SELECT … FROM usage GROUP BY …
QUERIES = 20
COMMANDS = 5
# For comparison: the same 14 days summed from the records themselves, as `usage` did
# before the totals; its cost grows with the records.
FROM_RECORDS = (
    "SELECT key, COALESCE(served_model, requested_model), COUNT(*), SUM(prompt_tokens), "
    "SUM(completion_tokens), SUM(cost) FROM usage WHERE time >= ? GROUP BY 1, 2"
)


def records(count: int, now: float) -> Iterator[tuple[object, ...]]:
    rng = random.Random(26)
    keys = [f"key-{i}" for i in range(20)]
    models = [f"vendor/model-{i}:free" for i in range(10)]
    for _ in range(count):
        status = 200 if rng.random() < 0.95 else 429
        yield (
            now - rng.random() * 90 * DAY, rng.choice(keys), "/v1/chat/completions", "free",
            rng.choice(models), 1, status, 1, "miss" if rng.random() < 0.9 else "hit",
            rng.randrange(1000), rng.randrange(500), 0.0, 120.0, 40.0,
        )  # fmt: skip


def seed_sqlite(path: Path, count: int, now: float) -> None:
    connection = open_database(path)
    marks = ", ".join("?" * 14)
    connection.execute("BEGIN")
    connection.executemany(f"INSERT INTO usage ({COLUMNS}) VALUES ({marks})", records(count, now))
    connection.execute(render(BACKFILL, "sqlite"))
    connection.execute("COMMIT")
    connection.close()


async def seed_postgres(url: str, count: int, now: float) -> None:
    import psycopg

    async with open_stores(url):  # migrated
        pass
    async with await psycopg.AsyncConnection.connect(url) as connection:
        async with connection.cursor() as cursor:
            async with cursor.copy(f"COPY usage ({COLUMNS}) FROM STDIN") as copy:
                for row in records(count, now):
                    await copy.write_row(row)
            await cursor.execute(render(BACKFILL, "postgres"))
            await cursor.execute("ANALYZE")
        await connection.commit()


async def time_query(database: str | Path, now: float) -> tuple[list[float], int]:
    async with open_stores(database) as (_, usage):
        times, rows = [], 0
        for _ in range(QUERIES):
            started = time.perf_counter()
            rows = len(await usage.totals(key=None, days=14, now=now))
            times.append(time.perf_counter() - started)
    return times, rows


async def time_from_records(database: str | Path, now: float) -> float:
    """Median of 3 runs of FROM_RECORDS over the same 14 days."""
    since = (int(now // DAY) - 13) * DAY
    times = []
    for _ in range(3):
        started = time.perf_counter()
        if isinstance(database, Path):
            connection = open_database(database)
            connection.execute(FROM_RECORDS, (since,)).fetchall()
            connection.close()
        else:
            import psycopg

            async with await psycopg.AsyncConnection.connect(database) as connection:
                await (
                    await connection.execute(FROM_RECORDS.replace("?", "%s"), (since,))
                ).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_command(args: list[str], env: dict[str, str]) -> float:
    """Median wall time of `python -m app ARGS` (a new process each time)."""
    times = []
    for _ in range(COMMANDS):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "app", *args], env=env, cwd=ROOT, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(engine: str, database: str | Path, env: dict[str, str], seeded: float) -> str:
    now = time.time()
    times, rows = asyncio.run(time_query(database, now))
    from_records = asyncio.run(time_from_records(database, now))
    command = time_command(["usage", "--days", "14", "--json"], env)
    start_up = time_command(["--version"], env)
    ms = [t * 1000 for t in times]
    return (
        f"| {engine} | {seeded:.1f} s | {rows} | {statistics.median(ms):.1f} | "
        f"{max(ms):.1f} | {command * 1000:.0f} | {start_up * 1000:.0f} | "
        f"{from_records * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.usage_query")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="an empty Postgres database")
    args = parser.parse_args()
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    lines = [
        f"records: {args.records:,}; `usage --days 14` query: {QUERIES} runs; "
        f"commands: median of {COMMANDS}",
        "",
        "| engine | seeding | rows | query median ms | query max ms | command ms | "
        "start-up ms (`--version`) | from the records ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "usage.db"
        started = time.perf_counter()
        seed_sqlite(path, args.records, time.time())
        seeded = time.perf_counter() - started
        lines.append(measure("SQLite", path, {**base, "PROXY_DB_PATH": str(path)}, seeded))

    cluster = None
    url = args.postgres
    if url is None:
        from tests.pg import PostgresCluster, binaries

        found = binaries()
        if found is None:
            lines.append("| Postgres | not measured: no /usr/lib/postgresql/*/bin ||||||")
        else:
            cluster = PostgresCluster(found)
            cluster.start()
            url = cluster.new_database()
    try:
        if url is not None:
            started = time.perf_counter()
            asyncio.run(seed_postgres(url, args.records, time.time()))
            seeded = time.perf_counter() - started
            env = {**base, "PROXY_DATABASE_URL": url}
            lines.append(measure("Postgres", url, env, seeded))
    finally:
        if cluster is not None:
            cluster.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
