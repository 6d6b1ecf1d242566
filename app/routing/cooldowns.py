"""Which models are cooling or failing, and how each has fared lately: the state fallback
reads.

Two marks, as DESIGN §6 separates them: *cooling* (rate-limited: skipped until its reset)
and *failing* (a 5xx, timeout or broken answer: only moved behind the other candidates
for a flat `FAILING_SECONDS`). Every entry expires and the maps are capped, so a flood of
distinct model ids cannot grow the process (40,000 ids must not leave MiBs behind); and
a success is remembered only for a model the proxy ranks (the caller says which), so ids
made up by clients leave nothing at all.

State sits behind the small `CooldownStore` protocol so that several replicas can share it
through Redis later; `MemoryCooldowns` is the in-process store. The rules that read it
(ranking, which model next) are pure functions elsewhere (`routing/ranking.py`,
`routing/attempts.py`). Times are epoch seconds
from the injected clock, because OpenRouter's resets are wall-clock (`X-RateLimit-Reset`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cachetools import TLRUCache, TTLCache

from app.free_tier import is_free_variant

# How long a model that failed (not rate-limited) is tried after the others.
FAILING_SECONDS = 15.0
# How long a model's health (latency, consecutive 429s) is remembered after its last use.
HEALTH_SECONDS = 3_600.0
# At most this many models per map: OpenRouter lists a few hundred; the rest is noise.
MAX_TRACKED_MODELS = 4_096
# Weight of the newest latency sample in the moving average used for ordering.
_LATENCY_WEIGHT = 0.3


@dataclass(frozen=True, slots=True)
class ModelStates:
    """What the store knows of some models at one moment: the rules read only this."""

    cooling: dict[str, float]  # rate-limited models and when each comes back
    failing: frozenset[str]  # models to try after the others
    latency: dict[str, float]  # moving-average latency of models that answered lately


NOTHING_KNOWN = ModelStates({}, frozenset(), {})


class CooldownStore(Protocol):
    """Cooldowns, failing marks and health of models. Every operation is atomic on its own
    (a shared store runs each as one command or script); none reads and then writes across
    two calls, so replicas marking the same model at once lose no mark."""

    async def snapshot(self, models: Sequence[str], now: float) -> ModelStates:
        """One read of everything known of `models` at `now` (the selector's only read)."""

    def expect(self, models: Sequence[str], now: float) -> None:
        """`snapshot(models)` follows soon: a shared store may read it along with its next
        round trip (DESIGN §12: one before the upstream call); a memory store has no need."""

    async def cool(self, model: str, until: float) -> None:
        """Skip `model` until `until`; an earlier `until` never shortens a longer cooldown."""

    async def cool_free_tier(self, until: float) -> None:
        """Cool every `:free` model at once (free-models-per-min / -per-day)."""

    async def mark_failing(self, model: str, until: float) -> None:
        """A server failure: try `model` after the others until `until` (never skip it)."""

    async def succeeded(self, model: str, latency: float | None) -> None:
        """Clear `model`'s failing mark and rate-limit streak; `latency` None: remember
        nothing new of it (a model outside the catalogue is never ranked)."""

    async def failed(self, model: str) -> int:
        """Count a rate limit and return the consecutive ones, this one included (the
        backoff), in one step."""


@dataclass(slots=True)
class _Health:
    failures: int = 0
    latency: float | None = None
    kept: float = float("-inf")  # when its entry's expiry was last pushed back


# A model's health is re-set (its expiry pushed back) at most this often, not on every
# success: a cachetools write per request was most of a ranked model's bookkeeping.
_KEEP_EVERY = 60.0


def _until(_: str, until: float, __: float) -> float:
    """A mark's value is the time it ends: the entry expires then."""
    return until


class MemoryCooldowns:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._until: TLRUCache[str, float] = TLRUCache(MAX_TRACKED_MODELS, _until, clock)
        self._failing: TLRUCache[str, float] = TLRUCache(MAX_TRACKED_MODELS, _until, clock)
        self._health: TTLCache[str, _Health] = TTLCache(MAX_TRACKED_MODELS, HEALTH_SECONDS, clock)
        self._free_until = 0.0
        # When every mark, and every health entry, has ended: until then the maps are read.
        # Asking a cachetools map whether it is empty expires it first (a clock read and a
        # walk) and the hot path asked three times a request (bench/README.md, "Profile").
        self._clock = clock
        self._marks_until = 0.0
        self._health_until = 0.0

    def __len__(self) -> int:
        """Entries still held after dropping the expired ones (a bound tests can check)."""
        for cache in (self._until, self._failing, self._health):
            cache.expire()
        return len(self._until) + len(self._failing) + len(self._health)

    async def snapshot(self, models: Sequence[str], now: float) -> ModelStates:
        marked, known = self._marks_until > now, self._health_until > now
        free_cooling = self._free_until > now
        if not (marked or known or free_cooling):
            return NOTHING_KNOWN  # the common case: nothing known at all
        cooling: dict[str, float] = {}
        failing: set[str] = set()
        latency: dict[str, float] = {}
        for model in models:  # each map read only while it can hold something
            until = self._until.get(model, 0.0) if marked else 0.0
            if free_cooling and is_free_variant(model):
                until = max(until, self._free_until)
            if until > now:
                cooling[model] = until
            if marked and self._failing.get(model, 0.0) > now:
                failing.add(model)
            health = self._health.get(model) if known else None
            if health is not None and health.latency is not None:
                latency[model] = health.latency
        return ModelStates(cooling, frozenset(failing), latency)

    def expect(self, models: Sequence[str], now: float) -> None:
        return None  # a read here costs no round trip

    async def cool(self, model: str, until: float) -> None:
        self._until[model] = max(until, self._until.get(model, 0.0))
        self._marks_until = max(self._marks_until, until)

    async def cool_free_tier(self, until: float) -> None:
        self._free_until = max(until, self._free_until)

    async def mark_failing(self, model: str, until: float) -> None:
        self._failing[model] = until
        self._marks_until = max(self._marks_until, until)

    async def succeeded(self, model: str, latency: float | None) -> None:
        now = self._clock()
        if self._marks_until > now:
            self._failing.pop(model, None)
        if latency is None:
            if self._health_until > now and (known := self._health.get(model)) is not None:
                known.failures = 0
            return
        health = (self._health.get(model) if self._health_until > now else None) or _Health()
        health.failures = 0
        health.latency = (
            latency
            if health.latency is None
            else (1 - _LATENCY_WEIGHT) * health.latency + _LATENCY_WEIGHT * latency
        )
        if now - health.kept > _KEEP_EVERY:  # re-set: a model in use stays remembered
            health.kept = now
            self._health[model] = health
            self._health_until = now + HEALTH_SECONDS

    async def failed(self, model: str) -> int:
        health = self._health.get(model) or _Health()
        health.failures += 1
        self._health[model] = health
        self._health_until = self._clock() + HEALTH_SECONDS
        return health.failures
