"""GET /metrics: Prometheus text (DESIGN §11).

It names keys (quota rejections) and shows the team's traffic, so once any client key
exists it answers only to PROXY_ADMIN_KEY; in open mode (loopback, no keys) it is open.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import is_admin, services_of
from app.errors import InvalidKey
from app.metrics import CONTENT_TYPE

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
    body = await services.metrics.scrape(services)
    return Response(body, media_type=CONTENT_TYPE)
