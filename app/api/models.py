"""GET /v1/models and /v1/models/{id}: the upstream catalogue in OpenAI's list shape, plus
the proxy's virtual models (`free`, alias chains) and each model's cooldown."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import ReaderDep, Services, ServicesDep
from app.errors import NotFound
from app.routing.candidates import FREE, is_model_id
from app.routing.catalogue import ModelInfo

router = APIRouter(prefix="/v1", tags=["models"])
OWNER = "openrouter-proxy"


@router.get("/models")
async def list_models(services: ServicesDep, _: ReaderDep) -> dict[str, Any]:
    """Every upstream model and every virtual one, with `free` and `cooldown_until`."""
    return {"object": "list", "data": await _cards(services)}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, services: ServicesDep, _: ReaderDep) -> dict[str, Any]:
    """One model; ids contain `/`, sent literally or as `%2F` (openai-python does the latter)."""
    for card in await _cards(services):
        if card["id"] == model_id:
            return card
    raise NotFound(
        f"Model '{model_id}' is not in the OpenRouter catalogue nor a proxy alias. "
        "GET /v1/models lists what exists.",
        param="model",
    )


async def _cards(services: Services) -> list[dict[str, Any]]:
    models = await services.catalogue.models()
    cooling = (await services.cooldowns.snapshot(list(models), services.clock())).cooling
    cards = [_upstream_card(info, cooling.get(info.id), services) for info in models.values()]
    free_pool = await services.router.free_pool(None)
    cards.append(_virtual_card(FREE, "Every free chat model, best first", free_pool, True))
    for alias in services.router.aliases[1:]:
        chain = services.router.chain(alias) or []
        free = all(m == FREE or (m in models and models[m].is_free) for m in chain)
        cards.append(_virtual_card(alias, f"Chain: {' → '.join(chain)}", chain, free))
    return cards


def _upstream_card(info: ModelInfo, cooldown: float | None, services: Services) -> dict[str, Any]:
    card = {
        **info.raw,
        "id": info.id,
        "object": "model",
        "created": info.raw.get("created") or 0,
        "owned_by": info.id.split("/", 1)[0] if is_model_id(info.id) else OWNER,
        "free": info.is_free,
        "cooldown_until": cooldown,
    }
    if (chain := services.router.chain(info.id)) is not None:
        card["fallback"] = chain
    return card


def _virtual_card(model_id: str, name: str, chain: list[str], free: bool) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": OWNER,
        "name": name,
        "free": free,
        "chain": chain,
        "cooldown_until": None,
    }
