"""GET /healthz (the process answers) and /readyz (it can serve: each dependency checked)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from app.deps import Services, ServicesDep
from app.errors import UpstreamError

router = APIRouter(tags=["health"])

# A readiness probe must answer quickly even when Redis does not.
REDIS_TIMEOUT_SECONDS = 1.0

Check = dict[str, Any]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no I/O, so a busy upstream never restarts a healthy proxy."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: each named check says what is wrong and what to do (DESIGN §11)."""
    checks = await ready_checks(services)
    failing = [name for name, check in checks.items() if not check["ok"]]
    # Redis away in `degraded` or `open` is named but still serves (DESIGN §12).
    serves = services.failover is None or services.failover.mode != "closed"
    blocking = [name for name in failing if name != "redis" or not serves]
    return JSONResponse(
        {"status": "unavailable" if blocking else "ok", "failing": failing, "checks": checks},
        status_code=503 if blocking else 200,
    )


async def ready_checks(services: Services) -> dict[str, Check]:
    """Every check by name; the status page shows the same (DESIGN §13)."""
    checks: dict[str, Check] = {
        "upstream_key": _upstream_key(services),
        "catalogue": await _catalogue(services),
        "database": await _database(services),
    }
    if services.failover is not None:
        checks["redis"] = {"ok": services.failover.up, "detail": services.failover.detail()}
    elif services.settings.redis_url is not None:
        checks["redis"] = await _redis(services.settings.redis_url)
    return checks


def _upstream_key(services: Services) -> Check:
    if services.settings.upstream_key:
        return {"ok": True, "detail": "OPENROUTER_API_KEY is set"}
    return {"ok": False, "detail": "OPENROUTER_API_KEY is not set: chat answers 503 until it is"}


async def _catalogue(services: Services) -> Check:
    try:
        models = await services.catalogue.models()
    except UpstreamError as error:
        return {"ok": False, "detail": f"the model catalogue never loaded: {error.message}"}
    loaded_at = services.catalogue.loaded_at
    age = None if loaded_at is None else max(0.0, services.clock() - loaded_at)
    shown = "?" if age is None else f"{age:.0f} s"
    return {
        "ok": True,
        "detail": f"catalogue has {len(models)} models, loaded {shown} ago",
        "age_seconds": None if age is None else round(age, 1),
    }


async def _database(services: Services) -> Check:
    team = services.team
    problem = await team.problem()
    if problem is None:
        return {"ok": True, "detail": f"{team.label} is writable"}
    return {"ok": False, "detail": problem}


async def _redis(url: str) -> Check:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return {"ok": False, "detail": "PROXY_REDIS_URL is set but the redis package is missing"}
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS * 2):
            await client.ping()
    except Exception as error:  # any failure is "not reachable"; the URL may hold a password
        return {"ok": False, "detail": f"Redis is not reachable ({type(error).__name__})"}
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return {"ok": True, "detail": "Redis answers"}
