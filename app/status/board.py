"""The one status snapshot every reader shares (DESIGN §13): assembled at most once per
interval, or again for a `current` reader once this process has finished a request since.
What goes into it is `snapshot.assemble`'s to say; the board only keeps it fresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from app.status.activity import Activity

# Seconds between two assemblies at most (every open page shares one).
INTERVAL_SECONDS = 1.0

Snapshot = dict[str, Any]


class Watched(Protocol):
    """What the board reads of the services: how many requests this process finished."""

    @property
    def activity(self) -> Activity: ...


S = TypeVar("S", bound=Watched)


class StatusBoard(Generic[S]):
    """Holds the latest snapshot; `get` assembles a new one when it is older than the
    interval (one assembly at a time, the others wait for it)."""

    def __init__(
        self,
        assemble: Callable[[S], Awaitable[Snapshot]],
        interval: float = INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._assemble = assemble
        self._interval = interval
        self._monotonic = monotonic
        self._latest: Snapshot | None = None
        self._built_at = 0.0
        self._changes = -1
        self._lock = asyncio.Lock()
        self.assemblies = 0  # how many were built (a bound tests and the bench can check)

    def _fresh(self, services: S, current: bool) -> bool:
        return (
            self._latest is not None
            and self._monotonic() - self._built_at < self._interval
            and (not current or services.activity.changes == self._changes)
        )

    def invalidate(self) -> None:
        """Keys changed: the next reader assembles a new snapshot."""
        self._latest = None

    async def get(self, services: S, *, current: bool = False) -> Snapshot:
        """The snapshot; `current`: not older than this process's last finished request."""
        if self._fresh(services, current):
            assert self._latest is not None
            return self._latest
        async with self._lock:
            if not self._fresh(services, current):
                changes = services.activity.changes
                self._latest = await self._assemble(services)
                self._built_at = self._monotonic()
                self._changes = changes
                self.assemblies += 1
            assert self._latest is not None
            return self._latest
