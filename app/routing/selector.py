"""Which model a walk tries next (DESIGN §6), a pure rule over one cooldown snapshot:
cooling models and those held back for this request wait, failing ones go after the
others, and with nothing ready the walk waits for the soonest to come back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.routing.cooldowns import ModelStates


class Holding(Protocol):
    """Something other than the model holds it back for this request only (the account's
    free allowance, DESIGN §7): treat it as cooling until `until`, cool it for nobody."""

    @property
    def until(self) -> float: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Pick:
    model: str | None  # the model to try now; None: nothing is ready, wait
    wait: float = 0.0  # with no model: seconds until the soonest one is back
    alone: bool = False  # no other model is ready now (a stream's last chance)


def pick(
    remaining: Sequence[str], states: ModelStates, held: Mapping[str, Holding], now: float
) -> Pick:
    """The next model of `remaining` in order: ready ones first, failing ones last."""
    cooling = dict(states.cooling) if held else states.cooling
    for model, hold in held.items():
        if model in remaining and hold.until > now:
            cooling[model] = max(cooling.get(model, 0.0), hold.until)
    # Plain loops, no generator: this runs before every attempt (bench/README.md, "Profile").
    ready = [m for m in remaining if m not in cooling] if cooling else list(remaining)
    if not ready:
        return Pick(None, wait=min(cooling.values()) - now)
    chosen = ready[0]
    if states.failing:
        for model in ready:
            if model not in states.failing:
                chosen = model
                break
    return Pick(chosen, alone=ready.count(chosen) == len(ready))
