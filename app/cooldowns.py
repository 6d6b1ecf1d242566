"""Which models are cooling, and how each has fared lately: the state fallback reads.

State sits behind the small `CooldownStore` protocol so that several replicas can share it
through Redis later; `MemoryCooldowns` is the in-process store. Times are epoch seconds
from the injected clock, because OpenRouter's resets are wall-clock (`X-RateLimit-Reset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

FREE_SUFFIX = ":free"
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

    async def succeeded(self, model: str, latency: float) -> None: ...

    async def failed(self, model: str) -> int:
        """Record a failure; return the consecutive failures, this one included."""

    async def rank(self, models: Sequence[str]) -> list[str]:
        """Order by recent success and latency: proven fast first, failing last."""


@dataclass(slots=True)
class _Health:
    failures: int = 0
    latency: float | None = None


class MemoryCooldowns:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._free_until = 0.0
        self._health: dict[str, _Health] = {}

    async def cooling(self, models: Sequence[str], now: float) -> dict[str, float]:
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

    async def succeeded(self, model: str, latency: float) -> None:
        health = self._health.setdefault(model, _Health())
        health.failures = 0
        health.latency = (
            latency
            if health.latency is None
            else (1 - _LATENCY_WEIGHT) * health.latency + _LATENCY_WEIGHT * latency
        )

    async def failed(self, model: str) -> int:
        health = self._health.setdefault(model, _Health())
        health.failures += 1
        return health.failures

    async def rank(self, models: Sequence[str]) -> list[str]:
        def key(model: str) -> tuple[int, float]:
            health = self._health.get(model)
            if health is None or health.latency is None and not health.failures:
                return (1, 0.0)  # untried: after the proven ones, in catalogue order
            if health.failures:
                return (2, float(health.failures))
            return (0, health.latency or 0.0)

        return sorted(models, key=key)
