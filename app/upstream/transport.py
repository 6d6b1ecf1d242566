"""How bytes reach OpenRouter: a two-method seam, as httpx's transports are.

Production talks raw aiohttp: httpx's request and response models cost about half of the
proxy's CPU per request even on an aiohttp transport (bench/README.md, "Transport
choice"). Tests keep swapping the upstream with any `httpx.AsyncBaseTransport`
(`MockTransport`, respx, `ASGITransport`) through `app.upstream.httpx_transport.HttpxTransport`.

Both map their library's exceptions to the built-in ones the proxy understands:
`TimeoutError` (connect timeout), `ConnectionError` (cannot connect, or the connection
broke while reading).
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, unchanged."""

    async def aclose(self) -> None:
        """Give the connection back, or drop it when the body was not read to its end."""


def broken(exc: BaseException) -> ConnectionError:
    """A library's connection failure as the built-in the proxy understands, keeping the
    OS error number of its cause (EMFILE is the proxy's own failure, not upstream's)."""
    text = str(exc) or exc.__class__.__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return ConnectionError(cause.errno, text)
        cause = cause.__cause__ or cause.__context__
    return ConnectionError(text)


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


class AiohttpTransport:
    """One aiohttp session for the process, created in the serving loop on first use."""

    def __init__(self, proxy: str | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxy = proxy

    def _open(self) -> aiohttp.ClientSession:
        # No connection cap: 1,000 concurrent streams must not queue (DESIGN §9).
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        connect_timeout: float,
    ) -> UpstreamResponse:
        session = self._session or self._open()
        timeout = aiohttp.ClientTimeout(connect=connect_timeout, sock_connect=connect_timeout)
        try:
            response = await session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
                proxy=self._proxy,
            )
        except TimeoutError as exc:  # aiohttp's connect timeouts are TimeoutErrors
            raise TimeoutError(str(exc) or "connect timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise broken(exc) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpResponse:
    __slots__ = ("_response", "status", "headers")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientError, OSError) as exc:
            raise broken(exc) from exc

    async def aclose(self) -> None:
        self._response.release()  # closes the connection if the body was not all read
