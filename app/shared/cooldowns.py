"""Cooldowns, failing marks and model health in Redis (DESIGN §12): what one replica learns
of a model (a 429, a 5xx, its latency) steers every replica's next choice.

One key per mark, expiring when the mark ends; `snapshot` reads every model's marks in one
script (one round trip). The memory store's caps are not needed: every key expires.

Kept cheap per request (DESIGN §12 "Cheap"): a snapshot is reused for `FRESH_SECONDS`
(the same models, read by this replica), and a success, the common case, is queued and
written with the others `FLUSH_SECONDS` later, off the client's path. So a mark from
another replica shows here within their sum, well inside §12's 100 ms. What this replica
writes itself shows here at once: a cooldown or failing mark drops the kept snapshots, a
success drops those that had the model failing, and a read from Redis, like any later
write of the same model, first sends the successes queued before it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.free_tier import is_free_variant
from app.routing.cooldowns import _LATENCY_WEIGHT, HEALTH_SECONDS, ModelStates
from app.shared.connection import Shared
from app.shared.wire import Batch

FRESH_SECONDS = 0.05  # a snapshot is reused this long (by the clock and by monotonic time)
_KEPT = 64  # snapshots kept at most (one per set of candidates): past it, all are dropped

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

# KEYS: per model its failing mark and health. ARGV: weight, expiry ms, then per model
# its latencies, oldest first, space-separated ('' = none): each success in turn.
_SUCCEEDED = """
local w = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  local health, samples = KEYS[i + 1], ARGV[2 + (i + 1) / 2]
  if samples == '' then
    if redis.call('EXISTS', health) == 1 then redis.call('HSET', health, 'f', 0) end
  else
    local l = tonumber(redis.call('HGET', health, 'l') or '')
    for sample in string.gmatch(samples, '%S+') do
      local new = tonumber(sample)
      if l then l = (1 - w) * l + w * new else l = new end
    end
    redis.call('HSET', health, 'f', 0, 'l', string.format('%.17g', l))
    redis.call('PEXPIRE', health, ARGV[2])
  end
end
"""

_HEALTH_MS = int(HEALTH_SECONDS * 1000)


@dataclass(frozen=True, slots=True)
class _Kept:
    """A snapshot as read, and until when it may be reused."""

    states: ModelStates
    at: float  # the clock's time it was read at
    until: float  # by the clock: fresh until then, or until a mark in it ends
    expires: float  # by time.monotonic (a test's clock may stand still)


class _Expected:
    """A snapshot read sent along with another store's round trip (`Shared.read_along`)."""

    def __init__(self, keys: list[str], sha: str, generation: int) -> None:
        self.keys = keys
        self.sha = sha
        self.generation = generation
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.at = 0.0  # time.monotonic() when answered

    def add(self, batch: Batch) -> None:
        batch.script(self.sha, _SNAPSHOT, self.keys)

    def deliver(self, result: Any) -> None:
        if not self.answer.done():
            self.at = time.monotonic()
            self.answer.set_result(result)  # an error too: the reader reads again itself


class RedisCooldowns:
    def __init__(self, shared: Shared, clock: Callable[[], float]) -> None:
        self._shared = shared
        self._clock = clock
        self._snapshot = shared.script(_SNAPSHOT)
        self._latest = shared.script(_LATEST)
        self._succeeded_sha = shared.script(_SUCCEEDED).sha
        self._free = shared.key("cool", "free-tier")
        self._kept: dict[tuple[str, ...], _Kept] = {}
        self._generation = 0  # a read older than the last drop is not kept
        self._queued: dict[str, list[float | None]] = {}  # successes not yet sent
        self._expected: dict[tuple[str, ...], _Expected] = {}
        shared.queue(self._queue_successes)

    def _keys(self, model: str) -> tuple[str, str, str]:
        key = self._shared.key
        return key("cool", model), key("failing", model), key("health", model)

    def _ms(self, until: float) -> int:
        """Expiry of a mark ending at `until` on the injected clock (0: over already)."""
        return max(0, int((until - self._clock()) * 1000))

    def _drop(self) -> None:
        """Forget the kept snapshots: this replica has just changed what they say."""
        self._kept.clear()
        self._generation += 1

    def _fresh(self, wanted: tuple[str, ...], now: float) -> ModelStates | None:
        kept = self._kept.get(wanted)
        if kept is not None and kept.at <= now < kept.until and time.monotonic() < kept.expires:
            return kept.states
        return None

    def _snapshot_keys(self, models: Sequence[str]) -> list[str]:
        keys = [self._free]
        for model in models:
            keys.extend(self._keys(model))
        return keys

    def expect(self, models: Sequence[str], now: float) -> None:
        """`snapshot(models)` follows soon: unless a kept one will do, its read goes along
        with the next round trip (the admission's), so it costs none of its own."""
        wanted = tuple(models)
        waiting = self._expected.get(wanted)
        if self._fresh(wanted, now) is not None or (waiting and not waiting.answer.done()):
            return
        if len(self._expected) >= _KEPT:
            return  # reads that no round trip took: each snapshot reads for itself
        read = _Expected(self._snapshot_keys(models), self._snapshot.sha, self._generation)
        self._expected[wanted] = read
        self._shared.read_along(read)

    async def snapshot(self, models: Sequence[str], now: float) -> ModelStates:
        wanted = tuple(models)
        if (states := self._fresh(wanted, now)) is not None:
            return states
        generation = self._generation
        expected = self._expected.pop(wanted, None)
        values: Any = None
        if expected is not None and not expected.answer.done():
            await self._shared.read(expected, expected.answer)
        if expected is not None and expected.generation == generation:
            if time.monotonic() - expected.at < FRESH_SECONDS:  # not one left unread lately
                values = expected.answer.result()  # (after a write here: read again)
        if values is None or isinstance(values, BaseException):
            values = await self._read(self._snapshot_keys(models))
        states, ends = self._parse(models, list(values), now)
        if generation == self._generation:
            if len(self._kept) >= _KEPT:
                self._kept.clear()
            until = min(now + FRESH_SECONDS, ends)
            self._kept[wanted] = _Kept(states, now, until, time.monotonic() + FRESH_SECONDS)
        return states

    async def _read(self, keys: list[str]) -> list[bytes | None]:
        """The snapshot script's answer; the queued successes go first, in the same trip."""
        batch = self._shared.queued()
        batch.script(self._snapshot.sha, _SNAPSHOT, keys)
        values = (await self._shared.send(batch))[-1]
        if isinstance(values, BaseException):
            raise values
        return list(values)

    def _parse(
        self, models: Sequence[str], values: list[bytes | None], now: float
    ) -> tuple[ModelStates, float]:
        """The states at `now`, and the soonest time a mark in them ends."""
        free = float(values[0] or 0.0)
        cooling: dict[str, float] = {}
        failing: set[str] = set()
        latency: dict[str, float] = {}
        ends = math.inf
        for i, model in enumerate(models):
            cool, fail, seconds = values[1 + 3 * i : 4 + 3 * i]
            until = float(cool or 0.0)
            if is_free_variant(model):
                until = max(until, free)
            if until > now:
                cooling[model] = until
                ends = min(ends, until)
            # a success queued here since the read began is newer than a mark it read
            if fail is not None and float(fail) > now and model not in self._queued:
                failing.add(model)
                ends = min(ends, float(fail))
            if seconds is not None:
                latency[model] = float(seconds)
        return ModelStates(cooling, frozenset(failing), latency), ends

    async def cool(self, model: str, until: float) -> None:
        if ms := self._ms(until):
            await self._latest([self._keys(model)[0]], [repr(until), ms])
            self._drop()

    async def cool_free_tier(self, until: float) -> None:
        if ms := self._ms(until):
            await self._latest([self._free], [repr(until), ms])
            self._drop()

    async def mark_failing(self, model: str, until: float) -> None:
        if ms := self._ms(until):
            if model in self._queued:
                await self._shared.flush()  # an earlier success must not clear this mark
            await self._shared.client.set(self._keys(model)[1], repr(until), px=ms)
            self._drop()

    async def succeeded(self, model: str, latency: float | None) -> None:
        """Queued, and sent with the others shortly (or with the next read or write)."""
        self._queued.setdefault(model, []).append(latency)
        if any(model in kept.states.failing for kept in self._kept.values()):
            self._drop()
        self._shared.later()

    def _queue_successes(self, batch: Batch) -> None:
        """The queued successes into `batch`, as one `_SUCCEEDED` script, each in turn."""
        if not self._queued:
            return
        queued, self._queued = self._queued, {}
        keys: list[str] = []
        args = [repr(_LATENCY_WEIGHT), str(_HEALTH_MS)]
        for model, samples in queued.items():
            keys.extend(self._keys(model)[1:])
            args.append(" ".join(repr(sample) for sample in samples if sample is not None))
        batch.script(self._succeeded_sha, _SUCCEEDED, keys, args)

    async def failed(self, model: str) -> int:
        if model in self._queued:
            await self._shared.flush()  # an earlier success resets the count before this one
        health = self._keys(model)[2]
        async with self._shared.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(health, "f", 1)
            pipe.pexpire(health, _HEALTH_MS)
            failures, _ = await pipe.execute()
        return int(failures)
