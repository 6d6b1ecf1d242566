"""SIGTERM without cut streams (DESIGN §5): uvicorn stops accepting and waits for open
requests for its grace period, then cancels them, which would cut each chunked body. Just
before that, `OpenStreams.end_all` ends every relayed stream with one error event and
`[DONE]`, so clients see a clean end and the log shows no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from typing import Any

import uvicorn

from app.upstream.deadlines import DeadlineReader

# Streams are ended this long before uvicorn's grace period runs out, to flush their end.
END_MARGIN_SECONDS = 1.0


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


def run_server(app: Any, streams: OpenStreams, *, grace: int, **config: Any) -> None:
    """`uvicorn.run`, except that open streams end cleanly before the grace period does."""
    server = _Server(uvicorn.Config(app, timeout_graceful_shutdown=grace, **config), streams)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as `uvicorn.run` does


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, streams: OpenStreams) -> None:
        super().__init__(config)
        self._streams = streams

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = self.config.timeout_graceful_shutdown or 0.0
        loop = asyncio.get_running_loop()
        self._streams.end_listeners()
        timer = loop.call_later(max(grace - END_MARGIN_SECONDS, 0.0), self._streams.end_all)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
