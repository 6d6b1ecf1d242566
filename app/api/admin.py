"""/admin/* (keys and usage, behind PROXY_ADMIN_KEY) and GET /v1/usage (the caller's own).

The admin routes answer 404, exactly as an unknown route, while PROXY_ADMIN_KEY is unset,
so a proxy without an admin key does not even reveal that they exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from app.deps import is_admin, services_of
from app.errors import InvalidKey
from app.team.auth import Caller
from app.team.keys import LIMITS, ApiKey
from app.team.store import Team
from app.team.usage import DAY, usage_summary, usage_today, utc_day_start

router = APIRouter(tags=["admin"])


async def require_admin(request: Request) -> Team:
    """The team store, for a request bearing PROXY_ADMIN_KEY; 404 when none is set."""
    services = services_of(request)
    if services.settings.admin_key is None:
        raise HTTPException(404)  # rendered as every unknown route is
    if not is_admin(request):
        raise InvalidKey("Invalid admin key. Pass PROXY_ADMIN_KEY as `Authorization: Bearer …`.")
    return services.team


AdminDep = Annotated[Team, Depends(require_admin)]


class KeyCreate(BaseModel):
    """POST /admin/keys body: the same choices as `openrouter-proxy keys create`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    rpm: int | None = Field(None, ge=1)
    rpd: int | None = Field(None, ge=1)
    tpd: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    models: list[str] = Field(default_factory=list)
    paid: bool = False


@router.get("/admin/keys")
async def list_keys(team: AdminDep) -> dict[str, Any]:
    """Every key, revoked ones included; never a secret."""
    keys = await team.call(team.keys.list)
    return {"object": "list", "data": [key.public() for key in keys]}


@router.post("/admin/keys", status_code=201)
async def create_key(body: KeyCreate, team: AdminDep) -> dict[str, Any]:
    """Create a key; the answer's `key` is the secret, shown this once."""
    secret = await team.call(team.keys.create, **body.model_dump())
    key = await team.call(team.keys.get, body.name)
    team.keyring.refresh()  # usable at once here; other replicas see it within a second
    return {"key": secret, **key.public()}


@router.delete("/admin/keys/{name}")
async def revoke_key(name: str, team: AdminDep) -> dict[str, Any]:
    """Revoke a key; requests bearing it get 401 from now on."""
    key = await team.call(team.keys.revoke, name)
    team.keyring.refresh()
    return key.public()


@router.get("/admin/usage")
async def admin_usage(
    team: AdminDep,
    key: str | None = None,
    days: Annotated[int, Query(ge=1, le=3660)] = 7,
) -> dict[str, Any]:
    """Requests, tokens and cost per key and model over the last `days` UTC days."""
    rows = await team.call(
        usage_summary, team.keys.connection, key=key, days=days, now=team.clock()
    )
    return {"object": "list", "data": rows}


class LiveCounters(Protocol):
    """What the quota store knows and the usage database cannot: the sliding-minute count
    and requests in flight. `live` returns {limit: (used, resets_at epoch or None)} for the
    limits it tracks (e.g. "rpm", "concurrency"; "rpd"/"tpd" too, to override the database)."""

    def live(self, key: ApiKey, now: float) -> Mapping[str, tuple[int, float | None]]: ...


async def usage_report(
    caller: Caller, team: Team, *, counters: LiveCounters | None = None
) -> dict[str, Any]:
    """GET /v1/usage's body: limits, used, remaining and resets_at per limit (DESIGN §4).

    Today `rpd` and `tpd` come from the usage records (which lag by up to a second) and
    `rpm`/`concurrency` are null unless `counters` (the quota store) provides them."""
    now = team.clock()
    requests, tokens = await team.call(usage_today, team.keys.connection, caller.name, now=now)
    midnight = utc_day_start(now) + DAY
    used: dict[str, int | None] = {"rpm": None, "rpd": requests, "tpd": tokens, "concurrency": None}
    resets: dict[str, float | None] = {
        "rpm": None,
        "rpd": midnight,
        "tpd": midnight,
        "concurrency": None,
    }
    if counters is not None and caller.key is not None:
        for limit, (live_count, reset) in counters.live(caller.key, now).items():
            used[limit], resets[limit] = live_count, reset
    limits: dict[str, int | None] = caller.key.limits if caller.key else dict.fromkeys(LIMITS)
    remaining: dict[str, int | None] = {}
    for limit in LIMITS:
        cap, count = limits[limit], used[limit]
        remaining[limit] = None if cap is None or count is None else max(0, cap - count)
    return {
        "key": caller.name,
        "limits": limits,
        "used": used,
        "remaining": remaining,
        "resets_at": resets,
    }


@router.get("/v1/usage")
async def my_usage(request: Request) -> dict[str, Any]:
    """The calling key's limits and what is left of them; counts toward no quota."""
    team = services_of(request).team
    caller = team.keyring.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    return await usage_report(caller, team)
