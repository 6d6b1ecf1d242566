"""A client that leaves before its response starts stops the request at once (DESIGN §5):
waiting for a cooling model, waiting for the first content, reading a non-stream answer.
Cancelling the request task closes the upstream connection through the attempt's own
`finally`, so nobody keeps an upstream call running for a client who is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import Receive

from app.errors import ClientGone


@asynccontextmanager
async def cancelled_when_gone(receive: Receive) -> AsyncIterator[None]:
    """Run the block; raise ClientGone as soon as the client disconnects. Enter it only
    once the request body has been read: the watcher consumes what `receive` returns."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def client_left(watcher: asyncio.Future[None]) -> None:
        nonlocal left
        if not watcher.cancelled() and watcher.exception() is None:
            left = True
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    watcher.add_done_callback(client_left)
    try:
        yield
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        watcher.remove_done_callback(client_left)
        watcher.cancel()
