"""SIGTERM without cut streams (DESIGN §5): uvicorn stops accepting and waits for open
requests for its grace period, then cancels them, which would cut each chunked body. Just
before that, `OpenStreams.end_all` ends every relayed stream with one error event and
`[DONE]`, so clients see a clean end and the log shows no traceback. The server class
also settles the heap once start-up is done (`server/heap.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from typing import Any

import uvicorn

from app.server import heap
from app.upstream.streams import OpenStreams

# Streams are ended this long before uvicorn's grace period runs out, to flush their end.
END_MARGIN_SECONDS = 1.0


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

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the app's lifespan has run: its objects are built
        heap.settle()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = self.config.timeout_graceful_shutdown or 0.0
        loop = asyncio.get_running_loop()
        self._streams.end_listeners()
        timer = loop.call_later(max(grace - END_MARGIN_SECONDS, 0.0), self._streams.end_all)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
