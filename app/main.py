"""`create_app`: the one place where the proxy's parts are built and wired together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from app import __version__
from app.api import admin, health, models
from app.api.metrics import router as metrics_router
from app.api.render import install_error_handlers
from app.api.routes import add_inference_routes, inference_lanes
from app.cache.flight import Flights
from app.cache.step import ResponseCache
from app.config import Settings, load_settings
from app.deps import Services
from app.descriptors import Descriptors
from app.metrics import Metrics
from app.routing.attempts import Attempts
from app.routing.candidates import Router
from app.routing.catalogue import Catalogue
from app.server.asgi import ProxyApp
from app.server.browser import BrowserGuard
from app.state import Stores, build_stores
from app.status.activity import Activity, Recorders
from app.status.board import StatusBoard
from app.status.routes import StatusAccess
from app.status.routes import router as status_router
from app.status.sessions import LoginLimiter
from app.status.snapshot import assemble
from app.team.budget import BudgetStore, refresh
from app.team.database import Database, open_team
from app.team.fair_share import ACTIVE_SECONDS
from app.team.gate import Gate
from app.team.quotas import QuotaStore
from app.upstream.client import OpenRouterClient
from app.upstream.counting import TokenCounter
from app.upstream.transport import AiohttpTransport, Transport, proxy_for

if TYPE_CHECKING:
    import httpx

    from app.shared.activity import SharedActivity


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] | None = None,
) -> FastAPI:
    """Build the app. `transport` replaces the upstream network, `clock` the wall clock
    (epoch seconds) used for cooldowns and the catalogue's freshness."""
    settings = settings or load_settings()
    services, stores = _services(settings, transport, clock or time.time)
    quotas, budget, now = stores.quotas, stores.budget, services.clock

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.team.start()
        await stores.start()
        if services.replicas_activity is not None:
            services.replicas_activity.start()
        await _seed(services.team, quotas, budget, now())
        following = _follow_free_allowance(services)
        yield
        if following is not None:
            following.cancel()
        await services.aclose()
        await stores.aclose()

    app = ProxyApp(
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
    app.lanes = inference_lanes()
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(admin.router)
    app.include_router(status_router)
    app.state.status_access = StatusAccess(stores.sessions, LoginLimiter())
    app.add_middleware(BrowserGuard, settings=settings)  # before everything else
    return app


def _services(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None,
    clock: Callable[[], float],
) -> tuple[Services, Stores]:
    """Every service a request reaches, and the shared stores (memory, or Redis) the
    lifespan starts, seeds and closes."""
    descriptors = Descriptors()
    upstream = OpenRouterClient(
        settings,
        _wrap(transport) or AiohttpTransport(proxy_for(settings.openrouter_base_url), descriptors),
    )
    catalogue = Catalogue(upstream, clock)
    stores = build_stores(settings, clock)
    cooldowns = stores.cooldowns
    team = open_team(settings, clock=clock)
    quotas, budget = stores.quotas, stores.budget
    gate = Gate(team, quotas, budget, catalogue, upstream.redactor, clock)
    cache = ResponseCache(settings, stores.cache, Flights(), stores.leases)
    metrics = Metrics(lambda: catalogue.loaded)  # its own registry: apps never collide
    activity = Activity(clock)
    services = Services(
        settings=settings,
        clock=clock,
        upstream=upstream,
        catalogue=catalogue,
        cooldowns=cooldowns,
        router=Router(settings, catalogue, cooldowns, clock),
        attempts=Attempts(
            cooldowns,
            catalogue,
            clock,
            settings.max_wait,
            settings.max_attempts,
            Recorders(metrics, activity),
        ),
        team=team,
        gate=gate,
        budget=budget,
        cache=cache,
        metrics=metrics,
        counter=TokenCounter(upstream, asks=settings.upstream_key is not None),
        status=StatusBoard(assemble),
        descriptors=descriptors,
        activity=activity,
        failover=stores.failover,
        replicas_activity=_replicas_activity(stores, activity),
    )
    return services, stores


def _replicas_activity(stores: Stores, activity: Activity) -> SharedActivity | None:
    """Every replica's activity through Redis; imported only with Redis in use (state.py)."""
    if stores.failover is None:
        return None
    from app.shared.activity import SharedActivity

    return SharedActivity(stores.failover, activity)


async def _seed(team: Database, quotas: QuotaStore, budget: BudgetStore, now: float) -> None:
    """Start the stores from the usage kept in the database, so a restart does not reset
    today's `rpd`/`tpd` counts nor forget which keys share the free allowance (DESIGN §7)."""
    for name, last in (await team.usage_store.last_used(now - ACTIVE_SECONDS, now)).items():
        await budget.mark_active(name, last)
    for key in team.keyring.keys():
        if key.revoked is None and (key.rpd is not None or key.tpd is not None):
            await quotas.seed(key.name, *await team.usage_store.today(key.name, now), now)


def _follow_free_allowance(services: Services) -> asyncio.Task[None] | None:
    """Keep the daily free budget in step with OpenRouter's GET /key (DESIGN §7), so calls
    made outside the proxy count too."""
    if services.settings.upstream_key is None:
        return None

    async def key_info() -> Any:
        return await services.upstream.get_json("/key", auth=True)

    return asyncio.create_task(refresh(services.budget, key_info, services.clock))


def _wrap(transport: httpx.AsyncBaseTransport | None) -> Transport | None:
    if transport is None:
        return None  # production: raw aiohttp (app/upstream/transport.py)
    from app.upstream.httpx_transport import HttpxTransport

    return HttpxTransport(transport)
