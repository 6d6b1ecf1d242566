"""/admin/* (keys and usage, behind PROXY_ADMIN_KEY) and GET /v1/usage (the caller's own).

The admin routes answer 404, exactly as an unknown route, while PROXY_ADMIN_KEY is unset,
so a proxy without an admin key does not even reveal that they exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException

from app.deps import is_admin, services_of
from app.errors import InvalidKey
from app.team.auth import Caller
from app.team.database import Database
from app.team.gate import Gate
from app.team.keys import MAX_LIMIT
from app.team.quota_views import usage_fields

router = APIRouter(tags=["admin"])


async def require_admin(request: Request) -> Database:
    """The team store, for a request bearing PROXY_ADMIN_KEY; 404 when none is set."""
    services = services_of(request)
    if services.settings.admin_key is None:
        raise HTTPException(404)  # rendered as every unknown route is
    if not is_admin(request):
        raise InvalidKey("Invalid admin key. Pass PROXY_ADMIN_KEY as `Authorization: Bearer …`.")
    return services.team


AdminDep = Annotated[Database, Depends(require_admin)]


def _patterns(value: object) -> object:
    """`models` as `keys create --models` takes it (one comma-separated string), or a list."""
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError('give a list of model patterns or one string such as "*:free,openai/*"')


# A limit is a JSON integer from 1 to the largest SQLite stores (DESIGN §4: 400 naming the
# field otherwise); strict, so `true` is not 1 and "5" is not 5.
Limit = Annotated[int | None, Field(ge=1, le=MAX_LIMIT)]


class KeyCreate(BaseModel):
    """POST /admin/keys body: the same choices as `openrouter-proxy keys create`, with
    strict JSON types (no bool for an integer, no string for a bool)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    rpm: Limit = None
    rpd: Limit = None
    tpd: Limit = None
    concurrency: Limit = None
    models: Annotated[list[str], BeforeValidator(_patterns)] = Field(default_factory=list)
    paid: bool = False


@router.get("/admin/keys")
async def list_keys(team: AdminDep) -> dict[str, Any]:
    """Every key, revoked ones included; never a secret."""
    keys = await team.key_store.list()
    return {"object": "list", "data": [key.public() for key in keys]}


@router.post("/admin/keys", status_code=201)
async def create_key(body: KeyCreate, team: AdminDep) -> dict[str, Any]:
    """Create a key; the answer's `key` is the secret, shown this once."""
    secret = await team.key_store.create(**body.model_dump())
    key = await team.key_store.get(body.name)
    await team.reload_keys()  # usable at once here; other replicas see it within a second
    return {"key": secret, **key.public()}


@router.delete("/admin/keys/{name}")
async def revoke_key(name: str, team: AdminDep) -> dict[str, Any]:
    """Revoke a key; requests bearing it get 401 from now on."""
    key = await team.key_store.revoke(name)
    await team.reload_keys()
    return key.public()


@router.get("/admin/usage")
async def admin_usage(
    team: AdminDep,
    key: str | None = None,
    days: Annotated[int, Query(ge=1, le=3660)] = 7,
) -> dict[str, Any]:
    """Rows per UTC day, key and model over the last `days` days (DESIGN §2), from the
    daily totals."""
    rows = await team.usage_store.totals(key=key, days=days, now=team.clock())
    return {"object": "list", "data": rows}


async def usage_report(caller: Caller, gate: Gate, now: float) -> dict[str, Any]:
    """GET /v1/usage's body (DESIGN §4, §7): limits, used, remaining and resets_at per limit,
    read from the live quota store (the one that admits requests, so the two never
    disagree), and `free_budget`: the caller's fair share of the account's free allowance
    and what is left of that allowance today. Reading it counts toward nothing."""
    snapshot = await gate.quotas.snapshot(caller.key, now)
    return {
        "key": caller.name,
        **usage_fields(snapshot),
        "free_budget": dict(await gate.free_budget(caller.name)),
    }


@router.get("/v1/usage")
async def my_usage(request: Request) -> dict[str, Any]:
    """The calling key's limits and what is left of them; counts toward no quota."""
    services = services_of(request)
    caller = await services.gate.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    return await usage_report(caller, services.gate, services.clock())
