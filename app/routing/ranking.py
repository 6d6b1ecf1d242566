"""The order to try a pool of models in (DESIGN §6): a pure rule over what the cooldown
store knows, so every store implementation ranks the same way."""

from __future__ import annotations

from collections.abc import Sequence

from app.routing.cooldowns import ModelStates


def rank(models: Sequence[str], states: ModelStates) -> list[str]:
    """Proven fast first (by recent latency), then untried in catalogue order, failing last."""

    def key(model: str) -> tuple[int, float]:
        if model in states.failing:
            return (2, 0.0)
        latency = states.latency.get(model)
        if latency is None:
            return (1, 0.0)  # untried: after the proven ones, in catalogue order
        return (0, latency)

    return sorted(models, key=key)
