"""Run an ASGI app on a real 127.0.0.1 socket, so tests cover real HTTP, streaming and sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


class LiveServer:
    """Context manager serving `app` with uvicorn in a background thread with its own loop."""

    def __init__(self, app: Any, *, start_timeout: float = 10.0, stop_timeout: float = 5.0) -> None:
        self.app = app
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.url = ""
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
                self.loop = runner.get_loop()
                runner.run(self.server.serve())
        except BaseException as exc:  # surfaced by __enter__
            self._error = exc

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"live server failed to start: {self._error!r}")
            time.sleep(0.005)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def _stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(self.stop_timeout)
        if self._thread.is_alive():  # open streams would otherwise block graceful shutdown
            self.server.force_exit = True
            self._thread.join(self.stop_timeout)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
