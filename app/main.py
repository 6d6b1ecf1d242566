"""`create_app`: the one place where the proxy's parts are built and wired together."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app import __version__
from app.api import admin, health, models
from app.api.routes import add_inference_routes
from app.routing.attempts import Attempts
from app.server.browser import BrowserGuard
from app.routing.catalogue import Catalogue
from app.config import Settings, load_settings
from app.routing.cooldowns import MemoryCooldowns
from app.deps import Services
from app.errors import install_error_handlers
from app.routing.candidates import Router
from app.team.store import Team
from app.upstream.transport import Transport
from app.upstream.client import OpenRouterClient

if TYPE_CHECKING:
    import httpx


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] | None = None,
) -> FastAPI:
    """Build the app. `transport` replaces the upstream network, `clock` the wall clock
    (epoch seconds) used for cooldowns and the catalogue's freshness."""
    settings = settings or load_settings()
    clock = clock or time.time
    upstream = OpenRouterClient(settings, _wrap(transport))
    catalogue = Catalogue(upstream, clock)
    cooldowns = MemoryCooldowns(clock)
    services = Services(
        settings=settings,
        clock=clock,
        upstream=upstream,
        catalogue=catalogue,
        cooldowns=cooldowns,
        router=Router(settings, catalogue, cooldowns),
        attempts=Attempts(cooldowns, catalogue, clock, settings.max_wait, settings.max_attempts),
        team=Team(settings.db_path, clock=clock),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.team.start()
        yield
        await services.aclose()

    app = FastAPI(
        title="openrouter-proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    add_inference_routes(app)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.add_middleware(BrowserGuard, settings=settings)  # before everything else
    return app


def _wrap(transport: httpx.AsyncBaseTransport | None) -> Transport | None:
    if transport is None:
        return None  # production: raw aiohttp (app/upstream/transport.py)
    from app.upstream.httpx_transport import HttpxTransport

    return HttpxTransport(transport)
