"""Bare pass-through floors: what Starlette + an HTTP client cost with no features at all.

Each factory builds a Starlette app serving `POST /v1/chat/completions` (forwards the body
bytes to `$BENCH_UPSTREAM_URL/chat/completions` and returns the body, or relays an
`text/event-stream` answer chunk by chunk) and `GET /healthz`. Run one with uvicorn:

    BENCH_UPSTREAM_URL=http://127.0.0.1:8090/api/v1 uvicorn --factory \\
        bench.floors:aiohttp_floor --loop uvloop --http httptools --no-access-log

Floors: `aiohttp_floor` (raw aiohttp, one reused ClientSession), `httpx_floor` (httpx's own
pool), `httpx_aiohttp_floor` (httpx.AsyncClient on `httpx_aiohttp.AiohttpTransport`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]
# Connection limits are off: 1,000 concurrent slow streams need 1,000 upstream connections.
CONNECT_TIMEOUT_S = 5.0
TOTAL_TIMEOUT_S = 600.0


def _upstream_chat_url() -> str:
    base = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8090/api/v1")
    return base.rstrip("/") + "/chat/completions"


def _upstream_headers() -> dict[str, str]:
    key = os.environ.get("OPENROUTER_API_KEY", "sk-or-v1-bench")
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _app(
    handler: Handler, lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]]
) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", handler, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def aiohttp_floor() -> Starlette:
    """Starlette + raw aiohttp."""
    url = _upstream_chat_url()
    headers = _upstream_headers()
    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=TOTAL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            auto_decompress=False,
        )
        state["session"] = session
        try:
            yield
        finally:
            await session.close()

    async def chat(request: Request) -> Response:
        body = await request.body()
        resp = await state["session"].post(url, data=body, headers=headers)
        ctype = resp.headers.get("Content-Type", "application/json")
        if ctype.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in resp.content.iter_any():
                        yield chunk
                finally:
                    resp.release()

            return StreamingResponse(relay(), status_code=resp.status, media_type=ctype)
        try:
            data = await resp.read()
        finally:
            resp.release()
        return Response(data, status_code=resp.status, media_type=ctype)

    return _app(chat, lifespan)


def _httpx_floor(make_client: Callable[[], httpx.AsyncClient]) -> Starlette:
    url = _upstream_chat_url()
    headers = _upstream_headers()
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = make_client()
        state["client"] = client
        try:
            yield
        finally:
            await client.aclose()

    async def chat(request: Request) -> Response:
        body = await request.body()
        client = state["client"]
        upstream = await client.send(
            client.build_request("POST", url, content=body, headers=headers), stream=True
        )
        ctype = upstream.headers.get("Content-Type", "application/json")
        if ctype.startswith("text/event-stream"):
            return StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                media_type=ctype,
                background=BackgroundTask(upstream.aclose),
            )
        try:
            data = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(data, status_code=upstream.status_code, media_type=ctype)

    return _app(chat, lifespan)


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(TOTAL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


def httpx_floor() -> Starlette:
    """Starlette + httpx.AsyncClient on httpx's own connection pool (httpcore)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
    return _httpx_floor(
        lambda: httpx.AsyncClient(timeout=_timeout(), limits=limits, trust_env=False)
    )


def httpx_aiohttp_floor() -> Starlette:
    """Starlette + httpx.AsyncClient on httpx_aiohttp.AiohttpTransport."""
    from httpx_aiohttp import AiohttpTransport

    def make_client() -> httpx.AsyncClient:
        # The transport builds its ClientSession lazily (inside the running loop) from this
        # callable; passing it also lifts the transport's default 100-connection limit.
        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
            )

        transport = AiohttpTransport(client=session)
        return httpx.AsyncClient(transport=transport, timeout=_timeout(), trust_env=False)

    return _httpx_floor(make_client)
