"""GET /healthz (the process answers) and /readyz (it can serve chat: key and catalogue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from app.deps import ServicesDep
from app.errors import UpstreamError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no I/O, so a busy upstream never restarts a healthy proxy."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: each named check says what is wrong and what to do."""
    checks: dict[str, dict[str, Any]] = {}
    if services.settings.upstream_key:
        checks["upstream_key"] = {"ok": True, "detail": "OPENROUTER_API_KEY is set"}
    else:
        checks["upstream_key"] = {
            "ok": False,
            "detail": "OPENROUTER_API_KEY is not set: chat answers 503 until it is",
        }
    try:
        models = await services.catalogue.models()
        checks["upstream"] = {"ok": True, "detail": f"catalogue has {len(models)} models"}
    except UpstreamError as error:
        checks["upstream"] = {"ok": False, "detail": error.message}
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
