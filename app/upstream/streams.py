"""The streams one app is relaying, so that SIGTERM can end each cleanly (DESIGN §5):
`server/shutdown.py` calls `end_all` just before uvicorn's grace period runs out, and
every relay ends its stream as a deadline would, with one error event.
"""

from __future__ import annotations

import asyncio

from app.upstream.deadlines import DeadlineReader


class OpenStreams:
    """The readers of the streams being relayed by one app."""

    def __init__(self) -> None:
        self._readers: set[DeadlineReader] = set()
        self.stopping = False
        # Status page event streams (app/status/events.py): they carry no answer, so they
        # end as soon as shutdown begins rather than holding the grace period.
        self.listeners: set[asyncio.Event] = set()
        self.listeners_ended = False

    def add(self, reader: DeadlineReader) -> None:
        if self.stopping:
            reader.stop()
        self._readers.add(reader)

    def discard(self, reader: DeadlineReader) -> None:
        self._readers.discard(reader)

    def __len__(self) -> int:
        return len(self._readers)

    def end_listeners(self) -> None:
        self.listeners_ended = True
        for ended in list(self.listeners):
            ended.set()

    def end_all(self) -> None:
        """End every open stream as a deadline would; the relays write the error event."""
        self.stopping = True
        self.end_listeners()
        for reader in list(self._readers):
            reader.stop()
