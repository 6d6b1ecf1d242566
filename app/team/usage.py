"""One usage record per request, written off the request path; and the queries over them.

`UsageWriter.record()` only appends to a deque. A background task writes what has
accumulated every `FLUSH_INTERVAL` seconds in one transaction on a worker thread, so the
event loop never waits on the disk. A failed write (disk full, a locked file, the file
deleted or replaced under the server) logs one line and keeps the records for the next
try, up to `QUEUE_LIMIT` of them: past it a new record is dropped, counted (`dropped`,
the metric `openrouter_proxy_usage_dropped_total`) and logged, never silently (DESIGN
§7). `aclose()` (shutdown, SIGTERM) writes everything left, or logs and counts the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Literal

from app.team.db import DatabaseError, OpenedFile

logger = logging.getLogger("openrouter_proxy.usage")

FLUSH_INTERVAL = 0.5  # seconds; DESIGN §7: records reach the database within a second
BATCH = 5_000  # records per transaction, so one flush never holds the write lock for long
# Records kept while the database cannot be written: a few minutes of heavy traffic, some
# tens of MB; a longer outage drops (and counts) what comes beyond.
QUEUE_LIMIT = 100_000
DAY = 86_400

CacheResult = Literal["hit", "miss", "bypass"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    time: float  # epoch seconds when the request arrived
    key: str | None  # key name; None in open mode
    route: str  # "/v1/chat/completions", …
    requested_model: str | None
    served_model: str | None  # None when no model answered
    attempts: int
    status: int
    stream: bool
    cache: CacheResult
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # OpenRouter's usage.cost, when it reported one
    latency_ms: float
    ttft_ms: float | None  # streams: time to the first content sent; else None
    estimated: bool = False  # tokens counted by the proxy: a stream cut before its usage


_NAMES = tuple(f.name for f in fields(UsageRecord))
# A record as a row: attrgetter builds the tuple in C, where dataclasses.astuple deep-copies
# every field (a fifth of the server's CPU under load, on the writer thread).
_ROW = operator.attrgetter(*_NAMES)
_INSERT = f"INSERT INTO usage ({', '.join(_NAMES)}) VALUES ({', '.join('?' * len(_NAMES))})"


class UsageWriter:
    """Queue records in memory; a task started by `start()` writes them in batches.

    With `file`, each batch is written only while the path still names the file the
    connection opened, checked again after the commit: rows that went to a file deleted
    meanwhile stay queued, for the database `reconnect` gives next.
    """

    def __init__(self, connection: sqlite3.Connection, *, file: OpenedFile | None = None) -> None:
        self._db = connection
        self._file = file
        self._next: tuple[sqlite3.Connection, OpenedFile | None] | None = None
        self._pending: deque[UsageRecord] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._failing = False
        self._dropping = False
        self.limit = QUEUE_LIMIT
        self.dropped = 0  # records lost: the queue was full, or unwritten at shutdown

    @property
    def queue_depth(self) -> int:
        """Records accepted and not yet written (a metric: it grows while writes fail)."""
        return len(self._pending)

    def record(self, record: UsageRecord) -> None:
        """Accept a record; never blocks and never fails. Past `limit` queued records the
        new one is dropped (not the oldest: a flush may be writing those right now)."""
        if len(self._pending) < self.limit:
            self._pending.append(record)
            return
        if not self._dropping:  # one line per streak, not one per record
            self._dropping = True
            logger.error(
                "usage: %d records are waiting for the database; dropping new ones (counted "
                "in openrouter_proxy_usage_dropped_total) until it can be written again",
                len(self._pending),
            )
        self.dropped += 1

    def reconnect(self, connection: sqlite3.Connection, file: OpenedFile | None) -> None:
        """Write to this connection from the next flush on (the old one is closed then)."""
        if self._next is not None:
            self._next[0].close()
        self._next = (connection, file)

    def start(self) -> None:
        """Start the flushing task; call from a running loop (the app's lifespan)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        # Never cancelled: a cancelled flush would leave its thread writing while aclose()
        # wrote the same batch again. aclose() sets `_closing` and waits for the last flush.
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), FLUSH_INTERVAL)
            while self._pending and await self.flush():
                pass

    async def flush(self) -> bool:
        """Write up to BATCH queued records; on failure keep them and return False."""
        if self._next is not None:
            self._db.close()
            (self._db, self._file), self._next = self._next, None
        batch = list(itertools.islice(self._pending, BATCH))
        if not batch:
            return True
        try:
            await asyncio.to_thread(self._write, self._db, self._file, batch)
        except (sqlite3.Error, DatabaseError) as exc:
            if not self._failing:  # one line per failing streak, not one per try
                logger.error(
                    "usage: cannot write %d records (%s); keeping them and retrying",
                    len(self._pending),
                    exc,
                )
            self._failing = True
            return False
        if self._failing:
            logger.warning("usage: writing records again")
            self._failing = False
        self._dropping = False  # room again: a later drop starts a new streak, logged
        # Only this method removes records, and it never runs twice at once (the task
        # runs it, and aclose() waits for the task first), so the batch is still at the head.
        for _ in batch:
            self._pending.popleft()
        return True

    @staticmethod
    def _write(db: sqlite3.Connection, file: OpenedFile | None, batch: list[UsageRecord]) -> None:
        """One transaction, on a worker thread; raise if the rows may not be in the file at
        the database's path (they stay queued)."""
        if file is not None and (problem := file.problem()) is not None:
            raise DatabaseError(problem)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_INSERT, map(_ROW, batch))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if file is not None and (problem := file.problem()) is not None:
            raise DatabaseError(f"{problem} (during the write)")

    async def aclose(self) -> None:
        """Stop the task and write every record left (one try; a loss is logged and
        counted in `dropped`)."""
        if self._task is not None:
            self._closing.set()
            await self._task
            self._task = None
        while self._pending:
            if not await self.flush():
                self.dropped += len(self._pending)
                logger.error(
                    "usage: %d records lost at shutdown: the database cannot be written",
                    len(self._pending),
                )
                break
        self._db.close()
        if self._next is not None:
            self._next[0].close()


def utc_day_start(now: float, days_back: int = 0) -> float:
    """Epoch of 00:00 UTC on the day `days_back` days before `now`'s day."""
    return (int(now) // DAY - days_back) * DAY


def usage_summary(
    connection: sqlite3.Connection,
    *,
    key: str | None = None,
    days: int = 7,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Per key and model over the last `days` UTC days (today included): requests, errors,
    tokens and cost. The model is the one that answered, else the one requested."""
    since = utc_day_start(time.time() if now is None else now, days - 1)
    where = "time >= ?"
    params: list[Any] = [since]
    if key is not None:
        where += " AND key = ?"
        params.append(key)
    rows = connection.execute(
        f"""SELECT key, COALESCE(served_model, requested_model) AS model, COUNT(*),
                   SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost)
            FROM usage WHERE {where} GROUP BY key, model ORDER BY key, model""",
        params,
    )
    return [
        {
            "key": row[0],
            "model": row[1],
            "requests": row[2],
            "errors": row[3],
            "prompt_tokens": row[4],
            "completion_tokens": row[5],
            "cost": row[6],
        }
        for row in rows
    ]


def usage_today(
    connection: sqlite3.Connection, key: str | None, *, now: float | None = None
) -> tuple[int, int]:
    """(requests, tokens) of `key` since 00:00 UTC, counted as the daily limits count them:
    requests that reached an upstream or the cache (a refused request counts for nothing),
    and tokens of upstream answers only (a cache hit costs no tokens, DESIGN §8)."""
    since = utc_day_start(time.time() if now is None else now)
    row = connection.execute(
        """SELECT COUNT(*), COALESCE(SUM(CASE WHEN cache != 'hit'
                                         THEN prompt_tokens + completion_tokens END), 0)
           FROM usage WHERE key IS ? AND time >= ? AND (attempts > 0 OR cache = 'hit')""",
        (key, since),
    ).fetchone()
    return int(row[0]), int(row[1])
