"""Everything a request needs, built once in `create_app` and reached through `ServicesDep`."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from app.body_budget import BodyBudget
from app.cache.step import ResponseCache
from app.config import Settings
from app.descriptors import Descriptors
from app.metrics import Metrics
from app.routing.attempts import Attempts
from app.routing.candidates import Router
from app.routing.catalogue import Catalogue
from app.routing.cooldowns import CooldownStore
from app.status.activity import Activity
from app.status.board import StatusBoard
from app.team.auth import Caller
from app.team.budget import BudgetStore
from app.team.database import Database
from app.team.gate import Gate
from app.upstream.client import OpenRouterClient
from app.upstream.counting import TokenCounter
from app.upstream.streams import OpenStreams

if TYPE_CHECKING:
    from app.shared.activity import SharedActivity
    from app.shared.failover import Failover


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Callable[[], float]
    upstream: OpenRouterClient
    catalogue: Catalogue
    cooldowns: CooldownStore
    router: Router
    attempts: Attempts
    team: Database
    gate: Gate
    budget: BudgetStore
    cache: ResponseCache
    metrics: Metrics
    counter: TokenCounter  # answers count_tokens; remembers whether OpenRouter serves it
    status: StatusBoard[Services]  # the one snapshot, DESIGN §13
    streams: OpenStreams = field(default_factory=OpenStreams)  # ended cleanly on SIGTERM
    descriptors: Descriptors = field(default_factory=Descriptors)  # open files, DESIGN §6
    body_budget: BodyBudget = field(default_factory=BodyBudget)  # bodies before commit
    activity: Activity = field(default_factory=Activity)  # what the status page shows
    failover: Failover | None = None  # Redis or memory (DESIGN §12); None without Redis
    replicas_activity: SharedActivity | None = None  # every replica's activity; needs Redis

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


def is_admin(request: Request) -> bool:
    """The request bears PROXY_ADMIN_KEY as a bearer token (compared in constant time)."""
    admin_key = services_of(request).settings.admin_key
    if admin_key is None:
        return False
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    expected = admin_key.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


async def get_caller(request: Request) -> Caller:
    """The client key of a /v1 request (open mode: anyone), or 401 (DESIGN §7)."""
    return await services_of(request).gate.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


async def get_reader(request: Request) -> Caller | None:
    """A client key, or the admin key (the `models` command asks with it): None for admin."""
    return None if is_admin(request) else await get_caller(request)


CallerDep = Annotated[Caller, Depends(get_caller)]
ReaderDep = Annotated[Caller | None, Depends(get_reader)]
