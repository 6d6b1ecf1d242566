"""Cooldowns, failing marks and model health in Redis (DESIGN §12): what one replica learns
of a model (a 429, a 5xx, its latency) steers every replica's next choice.

One key per mark, expiring when the mark ends; `snapshot` reads every model's marks in one
script (one round trip). The memory store's caps are not needed: every key expires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from app.free_tier import is_free_variant
from app.routing.cooldowns import _LATENCY_WEIGHT, HEALTH_SECONDS, ModelStates
from app.shared.connection import Shared

# KEYS: the free tier's mark, then per model its cooldown, failing mark and health.
_SNAPSHOT = """
local out = {redis.call('GET', KEYS[1])}
for i = 2, #KEYS, 3 do
  out[#out + 1] = redis.call('GET', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[i + 2], 'l')
end
return out
"""

# KEYS: the mark. ARGV: until, expiry ms. A later `until` only ever replaces an earlier.
_LATEST = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
"""

# KEYS: failing mark, health. ARGV: latency ('' = none), weight, expiry ms.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'f', 0) end
  return
end
local new = tonumber(ARGV[1])
local old = redis.call('HGET', KEYS[2], 'l')
if old then
  local w = tonumber(ARGV[2])
  new = (1 - w) * tonumber(old) + w * new
end
redis.call('HSET', KEYS[2], 'f', 0, 'l', string.format('%.17g', new))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
"""

_HEALTH_MS = int(HEALTH_SECONDS * 1000)


class RedisCooldowns:
    def __init__(self, shared: Shared, clock: Callable[[], float]) -> None:
        self._shared = shared
        self._clock = clock
        self._snapshot = shared.script(_SNAPSHOT)
        self._latest = shared.script(_LATEST)
        self._succeeded = shared.script(_SUCCEEDED)
        self._free = shared.key("cool", "free-tier")

    def _keys(self, model: str) -> tuple[str, str, str]:
        key = self._shared.key
        return key("cool", model), key("failing", model), key("health", model)

    def _ms(self, until: float) -> int:
        """Expiry of a mark ending at `until` on the injected clock (0: over already)."""
        return max(0, int((until - self._clock()) * 1000))

    async def snapshot(self, models: Sequence[str], now: float) -> ModelStates:
        keys = [self._free]
        for model in models:
            keys.extend(self._keys(model))
        values = await self._snapshot(keys, [])
        free = float(values[0] or 0.0)
        cooling: dict[str, float] = {}
        failing: set[str] = set()
        latency: dict[str, float] = {}
        for i, model in enumerate(models):
            cool, fail, seconds = values[1 + 3 * i : 4 + 3 * i]
            until = float(cool or 0.0)
            if is_free_variant(model):
                until = max(until, free)
            if until > now:
                cooling[model] = until
            if fail is not None and float(fail) > now:
                failing.add(model)
            if seconds is not None:
                latency[model] = float(seconds)
        return ModelStates(cooling, frozenset(failing), latency)

    async def cool(self, model: str, until: float) -> None:
        if ms := self._ms(until):
            await self._latest([self._keys(model)[0]], [repr(until), ms])

    async def cool_free_tier(self, until: float) -> None:
        if ms := self._ms(until):
            await self._latest([self._free], [repr(until), ms])

    async def mark_failing(self, model: str, until: float) -> None:
        if ms := self._ms(until):
            await self._shared.client.set(self._keys(model)[1], repr(until), px=ms)

    async def succeeded(self, model: str, latency: float | None) -> None:
        _, failing, health = self._keys(model)
        seconds = "" if latency is None else repr(latency)
        await self._succeeded([failing, health], [seconds, _LATENCY_WEIGHT, _HEALTH_MS])

    async def failed(self, model: str) -> int:
        health = self._keys(model)[2]
        async with self._shared.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(health, "f", 1)
            pipe.pexpire(health, _HEALTH_MS)
            failures, _ = await pipe.execute()
        return int(failures)
