"""Everything a request needs, built once in `create_app` and reached through `ServicesDep`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from app.cache.step import ResponseCache
from app.config import Settings
from app.metrics import Metrics
from app.routing.attempts import Attempts
from app.routing.candidates import Router
from app.routing.catalogue import Catalogue
from app.routing.cooldowns import CooldownStore
from app.server.shutdown import OpenStreams
from app.team.budget import BudgetStore
from app.team.gate import Gate
from app.team.store import Team
from app.upstream.client import OpenRouterClient


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Callable[[], float]
    upstream: OpenRouterClient
    catalogue: Catalogue
    cooldowns: CooldownStore
    router: Router
    attempts: Attempts
    team: Team
    gate: Gate
    budget: BudgetStore
    cache: ResponseCache
    metrics: Metrics
    streams: OpenStreams = field(default_factory=OpenStreams)  # ended cleanly on SIGTERM

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.team.aclose()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread per request."""
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]
