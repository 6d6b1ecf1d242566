"""Which models a request may be answered by, in the order to try them (DESIGN §6).

A name is a model id, a chain from the TOML `[chains]` table, or the virtual model `free`.
A chain keyed by a model id (it contains `/`, as every OpenRouter id does) is tried after
that model; a chain keyed by an alias (`fast`) stands in its place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from app.config import Settings
from app.free_tier import is_free_variant
from app.request import Needs, ParsedRequest
from app.routing.catalogue import Catalogue, ModelInfo
from app.routing.cooldowns import CooldownStore
from app.routing.ranking import rank

FREE = "free"
# With PROXY_ALLOW_PAID, `free` may end with at most this many priced models (DESIGN §6).
MAX_PAID_FALLBACKS = 3


def is_model_id(name: str) -> bool:
    return "/" in name


class Router:
    def __init__(
        self,
        settings: Settings,
        catalogue: Catalogue,
        cooldowns: CooldownStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._chains = settings.chains
        self._allow_paid = settings.allow_paid
        self._catalogue = catalogue
        self._cooldowns = cooldowns

    @property
    def aliases(self) -> list[str]:
        """The virtual models a client may name: `free` and every alias chain."""
        return [FREE, *(name for name in self._chains if not is_model_id(name))]

    def chain(self, name: str) -> list[str] | None:
        return self._chains.get(name)

    async def candidates(self, request: ParsedRequest) -> list[str]:
        names = [request.model, *request.models]
        if not self._needs_expansion(names):
            return list(dict.fromkeys(names))  # the common case: no catalogue, no awaits
        ordered: list[str] = []
        for name in names:
            ordered.extend(await self._expand(name, request.needs, seen=set()))
        return list(dict.fromkeys(ordered))

    def _needs_expansion(self, names: list[str]) -> bool:
        return any(name == FREE or name in self._chains for name in names)

    async def _expand(self, name: str, needs: Needs, seen: set[str]) -> list[str]:
        if name in seen:  # a chain naming itself, directly or not
            return []
        seen = seen | {name}
        if name == FREE:
            return await self.free_pool(needs)
        chain = self._chains.get(name)
        if chain is None:
            return [name]
        expanded = [name] if is_model_id(name) else []
        for entry in chain:
            expanded.extend(await self._expand(entry, needs, seen))
        return expanded

    async def free_pool(self, needs: Needs | None) -> list[str]:
        """Free chat models that fit the request, best first; then, if allowed, paid ones."""
        models = await self._catalogue.models()
        fitting = [m for m in models.values() if m.is_text_chat and _fits(m, needs)]
        free = [m.id for m in fitting if m.is_free and not m.is_router]
        pool = rank(free, await self._cooldowns.snapshot(free, self._clock()))
        if self._allow_paid:
            paid = sorted(
                (m for m in fitting if not m.is_free and not m.is_router),
                key=lambda m: m.unit_price,
            )
            pool.extend(m.id for m in paid[:MAX_PAID_FALLBACKS])
        return pool


def _fits(model: ModelInfo, needs: Needs | None) -> bool:
    if needs is None:
        return True
    if needs.images and not model.accepts_images:
        return False
    if needs.tools and not model.supports_tools:
        return False
    context = model.context_length
    return context is None or needs.tokens <= context


def longer_context(models: Mapping[str, ModelInfo], model: str, among: Sequence[str]) -> list[str]:
    """The models in `among` that fit an input too long for `model`: a known context
    longer than `model`'s, by the same fit rule as the `free` pool."""
    info = models.get(model)
    limit = info.context_length if info is not None else None
    if limit is None:
        return []
    needs = Needs(tokens=limit + 1)
    return [
        name
        for name in among
        if (other := models.get(name)) is not None
        and other.context_length is not None
        and _fits(other, needs)
    ]


def zero_priced(models: Mapping[str, ModelInfo] | None, model: str) -> bool:
    """Costs nothing: by the catalogue's prices, or by its `:free` id when unknown."""
    info = models.get(model) if models is not None else None
    return info.is_free if info is not None else is_free_variant(model)
