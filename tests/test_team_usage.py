"""Usage records: accepted without blocking, written in batches, never dropped while the
process lives. (Daily totals, retention: tests/test_store_contract.py, on both engines.)"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import astuple

import pytest

from app.team.db import MIGRATIONS, OpenedFile, file_identity, open_database, render
from app.team.keys import KeyTable
from app.team.sqlite_stores import SqliteBatchSink, SqliteUsageStore, direct
from app.team.usage import DAY, UsageRecord, UsageWriter
from tests.polling import wait_until_async

NOW = 1_800_000_000.0 - (1_800_000_000 % DAY) + 12 * 3600  # noon UTC


def record(**fields) -> UsageRecord:
    values = {
        "time": NOW,
        "key": "alice",
        "route": "/v1/chat/completions",
        "requested_model": "free",
        "served_model": "a/m:free",
        "attempts": 1,
        "status": 200,
        "stream": False,
        "cache": "miss",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost": None,
        "latency_ms": 12.5,
        "ttft_ms": None,
        **fields,
    }
    return UsageRecord(**values)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "proxy.db"


def sqlite_writer(path, connection=None) -> UsageWriter:
    """The server's writer on the file at `path` (its own connection, as the server's)."""
    connection = connection or open_database(path)
    return UsageWriter(SqliteBatchSink(connection, OpenedFile(path, file_identity(path))))


def count(path) -> int:
    connection = open_database(path)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.anyio
async def test_records_are_written_in_the_background_without_a_flush_call(path):
    writer = sqlite_writer(path)
    writer.start()
    try:
        for _ in range(3):
            writer.record(record())
        assert writer.queue_depth == 3
        # The promise is one second (FLUSH_INTERVAL is half of it); the deadline here is
        # generous because the test machine is shared: it checks that it happens at all.
        # The rows become visible a moment before the writer task takes them off its
        # queue (it resumes after the thread's commit): wait for both.
        await wait_until_async(lambda: count(path) == 3 and writer.queue_depth == 0, timeout=5)
    finally:
        await writer.aclose()
        writer.sink.close()


@pytest.mark.anyio
async def test_aclose_writes_every_record_and_a_restart_reads_them(path):
    writer = sqlite_writer(path)
    writer.start()
    for i in range(1000):
        writer.record(record(prompt_tokens=i, cost=0.001))
    await writer.aclose()  # as at SIGTERM: before the task's first flush
    writer.sink.close()

    table = KeyTable(open_database(path))  # a new process would see the same
    (row,) = await SqliteUsageStore(table, direct(path)).totals(key=None, days=1, now=NOW)
    table.close()
    assert row["requests"] == 1000
    assert row["prompt_tokens"] == sum(range(1000))
    assert row["cost"] == pytest.approx(1.0)


@pytest.mark.anyio
async def test_a_failed_write_keeps_the_records_and_logs_one_line(path, caplog):
    """A full disk, simulated by SQLite's own limit on the file's size (SQLITE_FULL)."""
    connection = open_database(path)
    writer = sqlite_writer(path, connection)
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    for _ in range(1000):
        writer.record(record())
    with caplog.at_level(logging.ERROR, logger="openrouter_proxy.usage"):
        assert not await writer.flush()
        assert not await writer.flush()
    assert writer.queue_depth == 1000
    (line,) = [r.getMessage() for r in caplog.records]
    assert "cannot write 1000 records" in line and "full" in line

    connection.execute("PRAGMA max_page_count = 1000000")  # space again
    writer.record(record())
    assert await writer.flush()
    assert writer.queue_depth == 0
    await writer.aclose()
    writer.sink.close()
    assert count(path) == 1001


@pytest.mark.anyio
async def test_a_database_of_the_first_schema_gains_the_estimated_mark(path):
    """DESIGN §7: a stream cut before its usage chunk is recorded as estimated. A file
    written before that mark existed is migrated; its records were reported, not estimated."""
    old = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        old.execute(render(statement, "sqlite"))
    old.execute("PRAGMA user_version = 1")
    old.executemany(
        "INSERT INTO usage VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [astuple(record())[:-1]],
    )
    old.close()

    writer = sqlite_writer(path)
    writer.record(record(estimated=True))
    await writer.aclose()
    writer.sink.close()

    connection = open_database(path)
    marks = connection.execute("SELECT estimated FROM usage ORDER BY id").fetchall()
    connection.close()
    assert marks == [(0,), (1,)]
