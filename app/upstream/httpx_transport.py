"""Any httpx transport behind the proxy's `Transport` seam: what tests inject.

Imported only when `create_app` is given a transport, so the server never loads httpx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from app.upstream.transport import CannotConnect, UpstreamResponse, broken


class HttpxTransport:
    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        connect_timeout: float,
    ) -> UpstreamResponse:
        timeouts = {"connect": connect_timeout, "pool": connect_timeout, "read": None}
        request = httpx.Request(
            method, url, headers=headers, content=body, extensions={"timeout": timeouts}
        )
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc) or "connect timeout") from exc
        except httpx.ConnectError as exc:  # refused, DNS, TLS: never connected
            raise broken(exc, CannotConnect) from exc
        except httpx.HTTPError as exc:  # ReadError, RemoteProtocolError: broke after connecting
            raise broken(exc) from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._transport.aclose()


class _HttpxResponse:
    __slots__ = ("_response", "status", "headers")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.aiter_bytes():
                yield data
        except httpx.HTTPError as exc:
            raise broken(exc) from exc

    def close_now(self) -> bool:
        return False  # httpx closes a response by awaiting it

    async def aclose(self) -> None:
        await self._response.aclose()
