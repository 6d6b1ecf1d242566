"""The upstream model catalogue: fetched on demand, fresh for 5 minutes, served stale while
OpenRouter's `/models` fails, and the source of truth for what is free (openrouter-api.md §9).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

from app.errors import UpstreamBroken, UpstreamError

FRESH_SECONDS = 300
# OpenRouter's own routers: they route elsewhere, so they never join the proxy's pools.
ROUTER_IDS = frozenset({"openrouter/free", "openrouter/auto"})


def _price(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    raw: dict[str, Any]

    @property
    def prices(self) -> list[float | None]:
        pricing = self.raw.get("pricing") or {}
        return [_price(v) for k, v in pricing.items() if k != "discount"]

    @property
    def is_free(self) -> bool:
        """Every price is zero; `"-1"` routers and image-output models are not free."""
        prices = self.prices
        return bool(prices) and all(p == 0 for p in prices)

    @property
    def is_router(self) -> bool:
        return self.id in ROUTER_IDS or any(p is not None and p < 0 for p in self.prices)

    @property
    def is_text_chat(self) -> bool:
        outputs = (self.raw.get("architecture") or {}).get("output_modalities") or ["text"]
        return list(outputs) == ["text"]

    @property
    def accepts_images(self) -> bool:
        inputs = (self.raw.get("architecture") or {}).get("input_modalities") or []
        return "image" in inputs

    @property
    def supports_tools(self) -> bool:
        return "tools" in (self.raw.get("supported_parameters") or [])

    @property
    def context_length(self) -> int | None:
        value = self.raw.get("context_length")
        return value if isinstance(value, int) else None

    @property
    def unit_price(self) -> float:
        """Prompt plus completion price per token, to order paid fallbacks cheapest first."""
        pricing = self.raw.get("pricing") or {}
        return (_price(pricing.get("prompt")) or 0.0) + (_price(pricing.get("completion")) or 0.0)


class Source(Protocol):
    """Where the catalogue is read from: OpenRouter's `GET /models` (the upstream client)."""

    async def get_json(self, path: str, *, auth: bool) -> Any: ...


class Catalogue:
    def __init__(self, upstream: Source, clock: Callable[[], float]) -> None:
        self._upstream = upstream
        self._fresh: TTLCache[str, dict[str, ModelInfo]] = TTLCache(
            maxsize=1, ttl=FRESH_SECONDS, timer=clock
        )
        self._stale: dict[str, ModelInfo] | None = None
        self._clock = clock
        self.loaded_at: float | None = None  # when the models were last fetched (/readyz)
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> dict[str, ModelInfo] | None:
        """The models as last fetched, without waiting (None before the first fetch):
        the ids metrics may name as labels."""
        return self._stale

    async def models(self) -> dict[str, ModelInfo]:
        """Id -> model. Raises UpstreamError only when it has never been fetched."""
        if (fresh := self._fresh.get("models")) is not None:
            return fresh
        async with self._lock:  # one refresh for all concurrent callers
            if (fresh := self._fresh.get("models")) is not None:
                return fresh
            try:
                models = await self._fetch()
            except UpstreamError:
                if self._stale is not None:
                    return self._stale
                raise
            self._fresh["models"] = self._stale = models
            self.loaded_at = self._clock()
            return models

    async def _fetch(self) -> dict[str, ModelInfo]:
        document = await self._upstream.get_json("/models", auth=False)
        entries = document.get("data") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise UpstreamBroken("OpenRouter's /models answer has no 'data' list")
        return {entry["id"]: ModelInfo(entry["id"], entry) for entry in entries if _usable(entry)}


# Fields ModelInfo reads, and the shape each must have when present (openrouter-api.md §9).
_SHAPES: dict[str, type | tuple[type, ...]] = {
    "pricing": dict,
    "architecture": dict,
    "supported_parameters": list,
}


def _usable(entry: Any) -> bool:
    """One malformed entry is skipped, so it cannot turn `free` and GET /v1/models into
    500s for every request."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return False
    for name, shape in _SHAPES.items():
        if entry.get(name) is not None and not isinstance(entry[name], shape):
            return False
    architecture = entry.get("architecture") or {}
    return all(
        isinstance(architecture.get(name) or [], list)
        for name in ("input_modalities", "output_modalities")
    )
