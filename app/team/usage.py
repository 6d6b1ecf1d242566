"""One usage record per request, written off the request path in batches (DESIGN §7).

`UsageWriter.record()` only appends to a deque. A background task hands what has
accumulated every `FLUSH_INTERVAL` seconds to the store (`BatchSink`: one transaction on a
worker thread for SQLite, on the pool for Postgres), so the event loop never waits on the
database. A failed write (disk full, a locked file, the file deleted or replaced under the
server, Postgres stopped) logs one line and keeps the records for the next try, up to
`QUEUE_LIMIT` of them: past it a new record is dropped, counted (`dropped`, the metric
`openrouter_proxy_usage_dropped_total`) and logged, never silently (DESIGN §7).
`aclose()` (shutdown, SIGTERM) writes everything left, or logs and counts the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from app.errors import DatabaseError, DatabaseUnavailable

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


class BatchSink(Protocol):
    async def write(self, batch: list[UsageRecord]) -> None:
        """Store the batch in one transaction, or raise DatabaseError/DatabaseUnavailable
        (nothing of it stored)."""


class UsageWriter:
    """Queue records in memory; a task started by `start()` hands them to `sink` in batches."""

    def __init__(self, sink: BatchSink) -> None:
        self.sink = sink
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
        batch = list(itertools.islice(self._pending, BATCH))
        if not batch:
            return True
        try:
            await self.sink.write(batch)
        except (DatabaseError, DatabaseUnavailable) as exc:
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

    async def aclose(self) -> None:
        """Stop the task and write every record left (one try; a loss is logged and
        counted in `dropped`). The sink stays open: its owner closes it."""
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


def utc_day_start(now: float, days_back: int = 0) -> float:
    """Epoch of 00:00 UTC on the day `days_back` days before `now`'s day."""
    return (int(now) // DAY - days_back) * DAY
