"""How bytes reach OpenRouter: a two-method seam, as httpx's transports are.

Production talks raw aiohttp: httpx's request and response models cost about half of the
proxy's CPU per request even on an aiohttp transport (bench/README.md, "Transport
choice"). Tests keep swapping the upstream with any `httpx.AsyncBaseTransport`
(`MockTransport`, respx, `ASGITransport`) through `app.upstream.httpx_transport.HttpxTransport`.

Both map their library's exceptions to the built-in ones the proxy understands:
`TimeoutError` (connect timeout), `CannotConnect` (the connection was never made: refused,
DNS, TLS) and any other `ConnectionError` (the connection was made, then reset or closed).
DESIGN §6 treats them apart: the first means OpenRouter is unreachable, the second is a
broken attempt of the model.

The aiohttp transport also resends: a request that fails on a reused keep-alive
connection before any byte of an answer is sent once more on a fresh connection: the
upstream closed an idle connection just as it was taken from the pool, which says nothing
about the model (RFC 9112 §9.3.1; aiohttp retries only idempotent methods itself). And it
opens a new connection only while the open-files budget (`app/descriptors.py`)
has room for it.
"""

from __future__ import annotations

import errno
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from app.descriptors import Descriptors
from app.errors import ProxyOutOfResources

# Local failures: out of file descriptors, memory or buffers. No model is to blame.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, unchanged."""

    def close_now(self) -> bool:
        """Close at once when that needs no I/O (aiohttp's release); False: await aclose()."""

    async def aclose(self) -> None:
        """Give the connection back, or drop it when the body was not read to its end."""


class CannotConnect(ConnectionError):
    """The connection was never made (refused, DNS, TLS): OpenRouter is unreachable."""


def broken(exc: BaseException, kind: type[ConnectionError] = ConnectionError) -> ConnectionError:
    """A library's connection failure as the built-in the proxy understands, keeping the
    OS error number of its cause (EMFILE is the proxy's own failure, not upstream's)."""
    text = str(exc) or exc.__class__.__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return kind(cause.errno, text)
        cause = cause.__cause__ or cause.__context__
    return kind(text)


async def read_all(response: UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in response.chunks()])


class Transport(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        connect_timeout: float,
    ) -> UpstreamResponse:
        """Send a request; return once the response head has arrived."""

    async def aclose(self) -> None: ...


_LOOPBACK_NAMES = frozenset({"localhost", "::1"})


def proxy_for(url: str) -> str | None:
    """The `HTTPS_PROXY`/`HTTP_PROXY` for `url` unless `NO_PROXY` exempts its host (or it is
    this machine). Read once: the upstream is one fixed host, and aiohttp's trust_env
    re-reads the environment on every request."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or host in _LOOPBACK_NAMES or host.startswith("127."):
        return None
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(parts.scheme)


# Whether the connection the current request was given came from the pool: set by the
# connector for the task that asked, read when that request fails after connecting.
_REUSED: ContextVar[bool] = ContextVar("upstream_connection_reused", default=False)
# Failures of a connection that was made: the upstream closed or reset it (aiohttp's
# ClientConnectionResetError, from 3.10.6, is a ConnectionResetError).
_DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError)


class _Sockets:
    """The upstream sockets handed out (weakly held: a closed one leaves by itself) and the
    connections being opened, shared by the transport's connectors."""

    def __init__(self) -> None:
        self.handed: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()
        self.connecting = 0

    def open(self) -> int:
        return sum(1 for protocol in self.handed if protocol.is_connected())


class _Connector(aiohttp.TCPConnector):
    """Tells the asking task whether its connection is new or reused, and counts it."""

    def __init__(self, sockets: _Sockets, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sockets = sockets

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        sockets = self._sockets
        sockets.connecting += 1  # before the first await: a burst must count itself
        try:
            connection = await super().connect(req, traces, timeout)
        finally:
            sockets.connecting -= 1
        protocol = connection.protocol
        reused = protocol in sockets.handed
        if not reused and protocol is not None:
            sockets.handed.add(protocol)
        _REUSED.set(reused)
        return connection


class AiohttpTransport:
    """One aiohttp session for the process, created in the serving loop on first use, and a
    second one, opened on first need, whose connections are always new (for the resend)."""

    def __init__(self, proxy: str | None = None, descriptors: Descriptors | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._sockets = _Sockets()
        self._proxy = proxy
        self._descriptors = descriptors
        self._in_flight = 0  # requests sent and not yet closed
        self._timeout = aiohttp.ClientTimeout()

    def _open(self, *, fresh: bool = False) -> aiohttp.ClientSession:
        # No connection cap: 1,000 concurrent streams must not queue (DESIGN §9); the
        # open-files budget refuses at once instead.
        connector = _Connector(self._sockets, limit=0, force_close=fresh)
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        if fresh:
            self._fresh = session
        else:
            self._session = session
        return session

    def _room(self, descriptors: Descriptors) -> bool:
        """A request may go up when an idle connection waits for it or a new one fits."""
        sockets = self._sockets
        if descriptors.fits(sockets.connecting + len(sockets.handed)):
            return True  # the common case: far below the limit, counted without a walk
        live = sockets.open()
        return self._in_flight < live or descriptors.fits(sockets.connecting + live)

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        connect_timeout: float,
    ) -> UpstreamResponse:
        if self._descriptors is not None and not self._room(self._descriptors):
            raise ConnectionError(
                errno.EMFILE, "no file descriptor to spare for another upstream connection"
            )
        timeout = self._timeout
        if timeout.connect != connect_timeout:  # one setting, so built once, not per call
            timeout = self._timeout = aiohttp.ClientTimeout(
                connect=connect_timeout, sock_connect=connect_timeout
            )
        proxy = self._proxy
        self._in_flight += 1
        try:
            try:
                response = await (self._session or self._open()).request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    timeout=timeout,
                    allow_redirects=False,
                    proxy=proxy,
                )
            except _DROPPED as exc:
                if not _resendable(exc):
                    raise
                response = await (self._fresh or self._open(fresh=True)).request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    timeout=timeout,
                    allow_redirects=False,
                    proxy=proxy,
                )
        except BaseException as exc:
            self._in_flight -= 1
            if (known := _known(exc)) is None:
                raise
            raise known from exc
        return _AiohttpResponse(response, self)

    def _closed(self) -> None:
        self._in_flight -= 1

    async def aclose(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()


def _known(exc: BaseException) -> Exception | None:
    """aiohttp's failure as the built-in the proxy understands; None: not aiohttp's."""
    if isinstance(exc, TimeoutError):  # aiohttp's connect timeouts are TimeoutErrors
        return TimeoutError(str(exc) or "connect timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS, a proxy's refusal
        return broken(exc, CannotConnect)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return broken(exc)
    return None


def _resendable(exc: BaseException) -> bool:
    """The connection was reused, and it died before any byte of an answer came back (with
    part of a head, aiohttp puts that head, not a text, in its ServerDisconnectedError)."""
    if isinstance(exc, aiohttp.ClientConnectorError) or not _REUSED.get():
        return False  # never connected, or a new connection: the attempt itself broke
    return not (
        isinstance(exc, aiohttp.ServerDisconnectedError) and not isinstance(exc.message, str)
    )


class _AiohttpResponse:
    __slots__ = ("_response", "_transport", "status", "headers")

    def __init__(self, response: aiohttp.ClientResponse, transport: AiohttpTransport) -> None:
        self._response = response
        self._transport: AiohttpTransport | None = transport
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientError, OSError) as exc:
            raise broken(exc) from exc

    def close_now(self) -> bool:
        self._response.release()  # closes the connection if the body was not all read
        if self._transport is not None:
            self._transport._closed()
            self._transport = None
        return True

    async def aclose(self) -> None:
        self.close_now()


def out_of_resources(exc: BaseException) -> ProxyOutOfResources:
    return ProxyOutOfResources(
        f"The proxy ran out of local resources ({exc}); no model was cooled. Raise the "
        "open-files limit (ulimit -n) or the memory available to the proxy.",
        headers={"connection": "close"},  # the client's socket is a descriptor too
    )
