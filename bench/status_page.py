"""`python -m bench.status_page`: the status page and its snapshot with 1,000,000 usage
records (DESIGN §13: ≤ 200 ms p95).

A SQLite database gets 1,000,000 records over 90 days (bench/usage_query.py's seeding, 20
keys, 10 models) and the daily totals built from them, plus the 20 keys themselves; a real
proxy serves it (in front of the fake OpenRouter, on 127.0.0.1). Each timed request first
drops the shared snapshot, so every one pays a full assembly: the worst case, which an
open page meets once a second at most.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from app.main import create_app
from app.team.database import open_stores
from bench.usage_query import seed_sqlite
from tests.conftest import make_settings
from tests.fake_openrouter import FakeOpenRouter
from tests.live_server import LiveServer

RECORDS = 1_000_000
RUNS = 50
ADMIN = "bench-admin-key"


async def add_keys(path: Path) -> None:
    async with open_stores(path) as (keys, _):
        for i in range(20):
            await keys.create(f"key-{i}", rpm=60, rpd=1000, tpd=1_000_000)


def p95(times: list[float]) -> float:
    return sorted(times)[int(len(times) * 0.95) - 1] * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "usage.db"
        started = time.perf_counter()
        seed_sqlite(path, RECORDS, time.time())
        asyncio.run(add_keys(path))
        seeded = time.perf_counter() - started
        fake = FakeOpenRouter()
        with LiveServer(fake.app) as upstream:
            app = create_app(make_settings(upstream.url, db_path=path, admin_key=ADMIN))
            with LiveServer(app) as proxy, httpx.Client(base_url=proxy.url) as client:
                board = app.state.services.status
                client.post("/status/login", data={"admin_key": ADMIN})
                lines = [f"records: {RECORDS:,} (seeded in {seeded:.0f} s); {RUNS} runs each", ""]
                lines += ["| request | median ms | p95 ms |", "|---|---|---|"]
                for path_ in ("/status/snapshot", "/status"):
                    times = []
                    for _ in range(RUNS):
                        board.invalidate()
                        t0 = time.perf_counter()
                        response = client.get(path_)
                        times.append(time.perf_counter() - t0)
                        assert response.status_code == 200, response.text[:200]
                    median = statistics.median(times) * 1000
                    lines.append(f"| GET {path_} | {median:.1f} | {p95(times):.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
