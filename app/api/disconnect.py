"""A client that leaves before its response starts stops the request at once (DESIGN §5):
waiting for a cooling model, waiting for the first content, reading a non-stream answer.
Cancelling the request task closes the upstream connection through the attempt's own
`finally`, so nobody keeps an upstream call running for a client who is gone.

A class rather than an `asynccontextmanager`: it is entered on every request, and the
generator-based one cost a generator, its frame and contextlib's wrapper each time.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive

from app.errors import ClientGone


class CancelledWhenGone:
    """Run the block; raise ClientGone as soon as the client disconnects. Enter it only
    once the request body has been read: the watcher consumes what `receive` returns."""

    __slots__ = ("_receive", "_task", "_watcher", "_left")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._left = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._watcher = asyncio.ensure_future(self._watch())
        self._watcher.add_done_callback(self._client_left)

    async def _watch(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":
            pass

    def _client_left(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            self._left = True
            self._task.cancel()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        watcher = self._watcher
        watcher.remove_done_callback(self._client_left)
        watcher.cancel()
        if isinstance(error, asyncio.CancelledError) and self._left and self._task.uncancel() == 0:
            raise ClientGone from None
