"""GET /metrics: Prometheus text (DESIGN §11).

It names keys (quota rejections) and shows the team's traffic, so once any client key
exists it answers only to PROXY_ADMIN_KEY; in open mode (loopback, no keys) it is open.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import Services, is_admin, services_of
from app.errors import InvalidKey, UpstreamError
from app.metrics import CONTENT_TYPE, Scraped

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    services = services_of(request)
    if not services.team.keyring.open_mode:
        if services.settings.admin_key is None:
            raise InvalidKey(
                "GET /metrics needs PROXY_ADMIN_KEY once client keys exist, and none is set: "
                "set PROXY_ADMIN_KEY and pass it as `Authorization: Bearer …`."
            )
        if not is_admin(request):
            raise InvalidKey("GET /metrics needs PROXY_ADMIN_KEY as `Authorization: Bearer …`.")
    return Response(await scrape(services), media_type=CONTENT_TYPE)


async def scrape(services: Services) -> bytes:
    """The Prometheus text: the stores' state is read now (some reads are async), then
    rendered with no await in between, so the text is one consistent moment."""
    metrics, scraped = services.metrics, Scraped()
    now = services.clock()
    if metrics.waiting:
        with contextlib.suppress(UpstreamError):  # still unknown: they wait on
            await services.catalogue.models()
    known = metrics.settled()
    # Gauges of shared state come from the status snapshot (DESIGN §13).
    snapshot = await services.status.get(services, current=True)
    if known is not None:
        scraped.catalogue_models = len(known)
        cooling = snapshot["cooling"]
        scraped.cooling = sum(1 for m, until in cooling.items() if m in known and until > now)
        scraped.failing = sum(1 for m in snapshot["failing"] if m in known)
    scraped.free_left = snapshot["free_budget"]["remaining_today"]
    scraped.free_limit = snapshot["free_budget"]["limit_today"]
    stats = await services.cache.store.stats()
    coalesced = services.cache.flights.coalesced
    scraped.cache = (stats.entries, stats.bytes, stats.hits + coalesced, stats.misses)
    scraped.usage_queue = services.team.usage.queue_depth
    scraped.usage_dropped = services.team.usage.dropped
    if services.failover is not None:
        scraped.redis_up = int(services.failover.up)
    return metrics.render(scraped)
