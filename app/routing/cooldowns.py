"""Which models are cooling or failing, and how each has fared lately: the state fallback
reads.

Two marks, as DESIGN §6 separates them: *cooling* (rate-limited: skipped until its reset)
and *failing* (a 5xx, timeout or broken answer: only moved behind the other candidates
for a flat `FAILING_SECONDS`). Every entry expires and the maps are capped, so a flood of
distinct model ids cannot grow the process (40,000 ids must not leave MiBs behind); and
a success is remembered only for a model the proxy ranks (the caller says which), so ids
made up by clients leave nothing at all.

State sits behind the small `CooldownStore` protocol so that several replicas can share it
through Redis later; `MemoryCooldowns` is the in-process store. Times are epoch seconds
from the injected clock, because OpenRouter's resets are wall-clock (`X-RateLimit-Reset`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cachetools import TLRUCache, TTLCache

FREE_SUFFIX = ":free"
# How long a model that failed (not rate-limited) is tried after the others.
FAILING_SECONDS = 15.0
# How long a model's health (latency, consecutive 429s) is remembered after its last use.
HEALTH_SECONDS = 3_600.0
# At most this many models per map: OpenRouter lists a few hundred; the rest is noise.
MAX_TRACKED_MODELS = 4_096
# Weight of the newest latency sample in the moving average used for ordering.
_LATENCY_WEIGHT = 0.3


def is_free_variant(model: str) -> bool:
    """The account-wide free-tier limits apply to `:free` ids only (openrouter-api.md §5)."""
    return model.endswith(FREE_SUFFIX)


class CooldownStore(Protocol):
    async def cooling(self, models: Sequence[str], now: float) -> dict[str, float]:
        """The models of `models` that are cooling, with the time each comes back."""

    async def cool(self, model: str, until: float) -> None: ...

    async def cool_free_tier(self, until: float) -> None:
        """Cool every `:free` model at once (free-models-per-min / -per-day)."""

    async def mark_failing(self, model: str, until: float) -> None:
        """A server failure: try `model` after the others until `until` (never skip it)."""

    async def failing(self, models: Sequence[str], now: float) -> set[str]:
        """The models of `models` marked failing at `now`."""

    async def succeeded(self, model: str, latency: float | None) -> None:
        """Clear `model`'s failing mark and rate-limit streak; `latency` None: remember
        nothing new of it (a model outside the catalogue is never ranked)."""

    async def failed(self, model: str) -> int:
        """Record a rate limit; return the consecutive ones, this one included (backoff)."""

    async def rank(self, models: Sequence[str]) -> list[str]:
        """Order by recent success and latency: proven fast first, failing last."""


@dataclass(slots=True)
class _Health:
    failures: int = 0
    latency: float | None = None


def _until(_: str, until: float, __: float) -> float:
    """A mark's value is the time it ends: the entry expires then."""
    return until


class MemoryCooldowns:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: TLRUCache[str, float] = TLRUCache(MAX_TRACKED_MODELS, _until, clock)
        self._failing: TLRUCache[str, float] = TLRUCache(MAX_TRACKED_MODELS, _until, clock)
        self._health: TTLCache[str, _Health] = TTLCache(MAX_TRACKED_MODELS, HEALTH_SECONDS, clock)
        self._free_until = 0.0

    def __len__(self) -> int:
        """Entries still held after dropping the expired ones (a bound tests can check)."""
        for cache in (self._until, self._failing, self._health):
            cache.expire()
        return len(self._until) + len(self._failing) + len(self._health)

    async def cooling(self, models: Sequence[str], now: float) -> dict[str, float]:
        if not self._until and self._free_until <= now:
            return {}  # the common case: nothing rate-limited at all
        result: dict[str, float] = {}
        for model in models:
            until = self._until.get(model, 0.0)
            if is_free_variant(model):
                until = max(until, self._free_until)
            if until > now:
                result[model] = until
        return result

    async def cool(self, model: str, until: float) -> None:
        self._until[model] = max(until, self._until.get(model, 0.0))

    async def cool_free_tier(self, until: float) -> None:
        self._free_until = max(until, self._free_until)

    async def mark_failing(self, model: str, until: float) -> None:
        self._failing[model] = until

    async def failing(self, models: Sequence[str], now: float) -> set[str]:
        if not self._failing:
            return set()
        return {m for m in models if self._failing.get(m, 0.0) > now}

    async def succeeded(self, model: str, latency: float | None) -> None:
        if self._failing:
            self._failing.pop(model, None)
        if latency is None:
            if (known := self._health.get(model)) is not None:
                known.failures = 0
            return
        health = self._health.get(model) or _Health()
        health.failures = 0
        health.latency = (
            latency
            if health.latency is None
            else (1 - _LATENCY_WEIGHT) * health.latency + _LATENCY_WEIGHT * latency
        )
        self._health[model] = health  # re-set: a model in use stays remembered

    async def failed(self, model: str) -> int:
        health = self._health.get(model) or _Health()
        health.failures += 1
        self._health[model] = health
        return health.failures

    async def rank(self, models: Sequence[str]) -> list[str]:
        failing = await self.failing(models, self._clock())

        def key(model: str) -> tuple[int, float]:
            if model in failing:
                return (2, 0.0)
            health = self._health.get(model)
            if health is None or health.latency is None:
                return (1, 0.0)  # untried: after the proven ones, in catalogue order
            return (0, health.latency)

        return sorted(models, key=key)
