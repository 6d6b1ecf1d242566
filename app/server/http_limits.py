"""Bounds on a client's request head that uvicorn does not enforce (DESIGN §5).

uvicorn's httptools protocol buffers a request head of any size and waits for it forever:
`timeout_keep_alive` only runs between requests, and `h11_max_incomplete_event_size`
only exists for the h11 protocol. httptools hands over a header only once it is complete,
after gathering its value piece by piece (20 unfinished 4 MiB values cost 90 MiB, a 48 MiB
one stalls the loop for seconds). `serve` therefore runs this subclass, which

- answers 431 and closes once the request head passes MAX_HEAD_BYTES, counting the bytes
  received while the head is unfinished as well as the parsed request line and headers;
- answers 408 and closes a connection whose request head is not complete HEAD_TIMEOUT
  seconds after it opened or after its previous request began (a slow-loris client);
- counts the open client connections for the open-files budget (`descriptors.py`);
- refuses a WebSocket upgrade with 403, as Starlette does for an app with no WebSocket
  route, without uvicorn loading a WebSocket library for it (`serve` runs with
  `ws="none"`: ~1 MiB less in every serving process).

A refused connection ends the way RFC 9112 §9.6 asks: the answer, then a half-close, and
what the client is still sending is read and dropped for up to LINGER_SECONDS, so that
the client reads the answer instead of a reset.

The ASGI middleware (`app/server/browser.py`) checks the header size too, for servers started
otherwise (tests, another ASGI server).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.descriptors import Descriptors
from app.server.browser import MAX_HEADER_BYTES

HEAD_TIMEOUT = 30.0
# How long a refused connection may still send before it is closed.
LINGER_SECONDS = 2.0
# Headers plus a request line; a long URL is not what the proxy serves.
MAX_HEAD_BYTES = MAX_HEADER_BYTES + 8 * 1024

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_TOO_LARGE_BODY = (
    b'{"error":{"message":"The request head passed %d bytes, the most the proxy accepts.",'
    b'"type":"invalid_request_error","param":null,"code":"request_headers_too_large"}}'
    % MAX_HEAD_BYTES
)
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class _HeadRefused(Exception):
    """Stops the parser; uvicorn then treats the request as malformed (already answered)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    descriptors: Descriptors | None = None  # set by `counting`
    _head_bytes = 0  # the request line and the headers parsed so far
    _head_received = 0  # bytes received while the head was unfinished
    _in_head = False
    _refused = False
    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def counting(cls, descriptors: Descriptors) -> type[BoundedHttpToolsProtocol]:
        """The protocol for a server whose connections count in `descriptors`."""
        return type("CountedHttpToolsProtocol", (cls,), {"descriptors": descriptors})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.descriptors is not None:
            self.descriptors.clients += 1
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.descriptors is not None:
            self.descriptors.clients -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: read and dropped until the linger ends
        in_head = self._in_head
        super().data_received(data)
        if self._in_head:  # the head is still unfinished: it has HEAD_TIMEOUT from now
            self._arm()
            if in_head:  # every byte of `data` belongs to the unfinished head
                self._head_received += len(data)
                if self._head_received > MAX_HEAD_BYTES:
                    self._refuse(_TOO_LARGE % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))

    def on_message_begin(self) -> None:
        # No timer here: a head that arrives whole (nearly every one) never needs it, and a
        # timer a request was measurable (bench/README.md, "Profile"); `data_received` arms
        # it when a chunk ends inside a head.
        super().on_message_begin()
        self._head_bytes = self._head_received = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def _should_upgrade_to_ws(self) -> bool:
        return True  # every WebSocket upgrade reaches `handle_websocket_upgrade`

    def handle_websocket_upgrade(self) -> None:
        """No route takes a WebSocket: the upgrade never reaches the app. This protocol
        stays the connection's, so its close is counted (`connection_lost`)."""
        self._refuse(_FORBIDDEN)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused head was answered with its own status
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(_TOO_LARGE % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))
            raise _HeadRefused

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        if not self._refused and not self.transport.is_closing():
            self._refused = True
            self.transport.write(response)
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._refuse, _TIMED_OUT)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
