"""GET /status/events: the status snapshot as server-sent events every EVERY_SECONDS
(DESIGN §13: a change shows on the open page within 4 s).

Every open page reads the one shared snapshot (`StatusBoard`), so ten pages cost ten
small writes every 2 s, not ten assemblies. A stream ends when the client goes (Starlette
cancels it on `http.disconnect`) and as soon as the server begins to shut down
(`OpenStreams.end_listeners`), so it never holds the grace period open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson

from app.deps import Services

EVERY_SECONDS = 2.0
# Browsers reconnect an EventSource after this many milliseconds.
RETRY_MS = 2000


def event(snapshot: object) -> bytes:
    return b"event: snapshot\ndata: " + orjson.dumps(snapshot) + b"\n\n"


async def snapshots(services: Services) -> AsyncIterator[bytes]:
    ended = asyncio.Event()
    streams = services.streams
    if streams.listeners_ended:
        return
    streams.listeners.add(ended)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while not ended.is_set():
            yield event(await services.status.get(services))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), EVERY_SECONDS)
    finally:
        streams.listeners.discard(ended)
