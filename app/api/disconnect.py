"""A client that leaves before its response starts stops the request at once (DESIGN §5):
waiting for a cooling model, waiting for the first content, reading a non-stream answer.
Cancelling the request task closes the upstream connection through the attempt's own
`finally`, so nobody keeps an upstream call running for a client who is gone.

The watcher is a task reading `receive`, and it starts only once the request has lasted
`WATCH_AFTER`: a task per request (started, waiting on the server's event, cancelled)
was an eighth of a fast request's CPU (bench/README.md, "Profile"), while a request that
ends sooner has nothing to cancel. A timer is all a fast request costs.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive

from app.errors import ClientGone

# Seconds before the watcher starts; a client leaving sooner is noticed then.
WATCH_AFTER = 0.05


class CancelledWhenGone:
    """Run the block; raise ClientGone as soon as the client disconnects. Enter it only
    once the request body has been read: the watcher consumes what `receive` returns."""

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "_left")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._left = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._timer = task.get_loop().call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._watcher = watcher = asyncio.ensure_future(self._watch())
        watcher.add_done_callback(self._client_left)

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
        self._timer.cancel()
        watcher = self._watcher
        if watcher is None:
            return
        watcher.remove_done_callback(self._client_left)
        watcher.cancel()
        if isinstance(error, asyncio.CancelledError) and self._left and self._task.uncancel() == 0:
            raise ClientGone from None
