"""A TCP hop between the proxy and the fake OpenRouter that breaks connections the way a
network or a server does, where an ASGI fake cannot: it sees each request's head and body
and either passes them on to the fake (and its answer back, byte for byte) or

- resets the connection before any byte of an answer (`reset`: a TCP RST, SO_LINGER 0),
  for requests naming one of those models;
- closes a kept-alive connection when the next request arrives on it (`close_reused`),
  as a server does whose idle timeout fires just as the client reuses the connection.

It runs its own event loop in a thread, like `LiveServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from types import TracebackType


class FaultyLink:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.reset: set[str] = set()  # models whose requests get a reset
        self.close_reused = False  # close the next request that comes on a reused connection
        self.resets = 0
        self.fresh_resets = 0  # of them, on a connection's first request (not a resend's cause)
        self.closed_reused = 0
        self.port = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> FaultyLink:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        upstream, to_upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        answers = asyncio.create_task(_pipe(upstream, to_client))
        served = 0
        try:
            while (request := await _read_request(client)) is not None:
                if served and self.close_reused:
                    self.close_reused = False
                    self.closed_reused += 1
                    return  # a plain close (FIN), no answer
                if _model(request) in self.reset:
                    self.resets += 1
                    self.fresh_resets += not served
                    _reset(to_client)
                    return
                served += 1
                to_upstream.write(request)
                await to_upstream.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            answers.cancel()
            for writer in (to_upstream, to_client):
                writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's head and body (Content-Length), or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def _model(request: bytes) -> str | None:
    _, _, body = request.partition(b"\r\n\r\n")
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            return str(parsed["model"])
    return None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
