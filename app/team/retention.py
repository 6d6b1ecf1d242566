"""Usage records older than PROXY_USAGE_RETENTION_DAYS are deleted; daily totals stay
(DESIGN §3, §7).

A background task deletes them in batches of PRUNE_BATCH, each its own short transaction,
so that no pass holds the database (LiteLLM's one-statement clean-up of a grown spend log
timed out, BerriAI/litellm#16582) and the usage writer gets in between two batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from app.errors import DatabaseError, DatabaseUnavailable
from app.team.stores import UsageStore
from app.team.usage import DAY

logger = logging.getLogger("openrouter_proxy.usage")

PRUNE_BATCH = 1_000  # records per transaction
PRUNE_INTERVAL = 3_600.0  # seconds between passes; the first comes right after start-up


async def prune_old_records(
    store: UsageStore, days: int, now: float, stop: asyncio.Event | None = None
) -> int:
    """Delete every record older than `days` days, batch by batch, until done or `stop`
    is set; how many went."""
    before = now - days * DAY
    total = 0
    while stop is None or not stop.is_set():
        deleted = await store.prune(before, PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            break
        await asyncio.sleep(0)  # between two transactions: whoever waits goes first
    return total


class Retention:
    """The pruning task: `start()` from the lifespan, `aclose()` at shutdown."""

    def __init__(self, store: UsageStore, days: int, clock: Callable[[], float]) -> None:
        self._store = store
        self._days = days
        self._clock = clock
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                deleted = await prune_old_records(
                    self._store, self._days, self._clock(), self._closing
                )
            except (DatabaseError, DatabaseUnavailable) as exc:
                logger.warning("usage: old records not deleted this time (%s)", exc)
            else:
                if deleted:
                    logger.info("usage: %d records older than %d days deleted", deleted, self._days)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), PRUNE_INTERVAL)

    async def aclose(self) -> None:
        if self._task is not None:
            self._closing.set()  # never cancelled: a SQLite batch would go on on its thread
            await self._task
            self._task = None
