"""`Team`: the key store, key ring and usage writer over one database file, built together.

Each part has its own connection: the ring must see other connections' commits through
`PRAGMA data_version`, and the writer's transactions run on a worker thread. Admin calls
and queries run on a worker thread too, one at a time, so a command holding the write lock
for a moment (`busy_timeout`) never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from app.team.auth import KeyRing
from app.team.db import open_database
from app.team.keys import KeyStore
from app.team.usage import UsageWriter

P = ParamSpec("P")
T = TypeVar("T")


class Team:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        """Open (and migrate) the database; raise DatabaseError, one line, when unusable."""
        self.path = path
        self.clock = clock
        self.keys = KeyStore(open_database(path), clock=clock)
        self.keyring = KeyRing(open_database(path))
        self.usage = UsageWriter(open_database(path))
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the usage writer's task (from the app's lifespan, on the running loop)."""
        self.usage.start()

    async def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a KeyStore method or a query on `self.keys.connection` off the event loop."""

        def locked() -> T:
            with self._lock:
                return function(*args, **kwargs)

        return await asyncio.to_thread(locked)

    async def aclose(self) -> None:
        """Write every pending usage record, then close the connections."""
        await self.usage.aclose()
        self.keyring.close()
        self.keys.close()
