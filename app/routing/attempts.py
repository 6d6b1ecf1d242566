"""Walk the candidates to the first usable answer (DESIGN §6), in three parts: the
selector picks the next model (`selector.pick`), the try-again table decides whether and
with which models to go on (`again.again`), and the recording writes each attempt down
(`recording.Recording`). One model per attempt; a model is tried again only after its
rate limit resets (at most `MAX_TRIES_PER_MODEL` times) or, when it is the only
candidate, once after a server failure.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from app.errors import ClientGone, InvalidRequest, ProxyError, RateLimited, UpstreamError
from app.routing.again import MAX_TRIES_PER_MODEL, again
from app.routing.candidates import longer_context, zero_priced
from app.routing.catalogue import Catalogue, ModelInfo
from app.routing.cooldowns import CooldownStore
from app.routing.ending import ending
from app.routing.policy import Next
from app.routing.recording import AttemptRecorder, Recording
from app.routing.selector import Holding, pick

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
# How often a waiting request checks whether its client is still there.
_GONE_POLL_SECONDS = 0.25
# A lone candidate that failed (not rate-limited) is tried again after a pause in this range.
RETRY_PAUSE_SECONDS = (0.2, 0.8)


Spend = Callable[[str], Awaitable[Holding | None]]


class Attempt(Protocol[T_co]):
    """One upstream attempt on `model`; `last` is true when no other model would follow,
    so a stream gets PROXY_FIRST_BYTE_TIMEOUT rather than the first-token timeout."""

    def __call__(self, model: str, *, last: bool) -> Awaitable[T_co]: ...


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """The answer, with the model that gave it and how many attempts it took (an error
    carries its count as `ProxyError.attempts`)."""

    result: T
    model: str
    attempts: int


class Attempts:
    def __init__(
        self,
        cooldowns: CooldownStore,
        catalogue: Catalogue,
        clock: Callable[[], float],
        max_wait: float,
        max_attempts: int = 10,
        recorder: AttemptRecorder | None = None,
    ) -> None:
        self._cooldowns = cooldowns
        self._catalogue = catalogue
        self._clock = clock
        self._max_wait = max_wait
        self._max_attempts = max_attempts
        self._recording = Recording(cooldowns, catalogue, clock, recorder)

    async def first_success(
        self,
        candidates: Sequence[str],
        attempt: Attempt[T],
        client_gone: Callable[[], Awaitable[bool]],
        spend: Spend | None = None,
    ) -> Served[T]:
        """The first usable answer; `spend` is asked before each attempt and may hold a
        model back for this request (the free allowance), as if it were cooling."""
        if not candidates:
            raise InvalidRequest(
                "No model in the catalogue fits this request (image input, tools or context "
                "length). Name a model that supports it.",
                param="model",
            )
        remaining, tries, held = list(candidates), dict[str, int](), dict[str, Holding]()
        tried, waited, last = 0, 0.0, None
        while remaining and tried < self._max_attempts:
            now = self._clock()
            chosen = pick(remaining, await self._cooldowns.snapshot(remaining, now), held, now)
            if (model := chosen.model) is None:
                if chosen.wait > self._max_wait - waited:
                    break
                await _sleep_unless_gone(chosen.wait, client_gone)
                waited += chosen.wait
                continue
            if spend is not None and (holding := await spend(model)) is not None:
                held[model] = holding
                continue
            tried += 1
            tries[model] = tries.get(model, 0) + 1
            started = time.monotonic()
            try:
                result = await attempt(model, last=chosen.alone or tried >= self._max_attempts)
            except UpstreamError as error:
                last = error
                verdict = await self._recording.failed(model, error, tried)
                then = again(verdict, lone=len(candidates) == 1, tries=tries[model])
                if then.stop:
                    raise _counted(error, tried) from None
                if then.pause:
                    await _sleep_unless_gone(random.uniform(*RETRY_PAUSE_SECONDS), client_gone)
                if not then.keep:
                    remaining.remove(model)
                if then.only is not None:
                    remaining = await self._narrowed(then.only, model, remaining)
                    if not remaining and then.only is Next.LARGER_CONTEXT:
                        raise _counted(error, tried) from None
                continue
            await self._recording.succeeded(model, started)
            return Served(result, model, tried)
        raise _counted(await self._ending(candidates, held, last), tried)

    def expect(self, candidates: Sequence[str]) -> None:
        """A walk over `candidates` follows: its first cooldown read may go along with the
        request's admission (Redis: one round trip before the upstream call)."""
        self._cooldowns.expect(candidates, self._clock())

    def longest(self, candidates: int, attempt_seconds: float) -> float:
        """The longest a walk over `candidates` models may take: every attempt it may make
        (a lone failing candidate twice, a rate-limited model up to MAX_TRIES_PER_MODEL
        times) lasting `attempt_seconds`, the lone candidate's pause and the waits for
        cooling models. An identical request in flight is followed no longer (DESIGN §12)."""
        attempts = min(self._max_attempts, MAX_TRIES_PER_MODEL * max(candidates, 1))
        return attempts * attempt_seconds + RETRY_PAUSE_SECONDS[1] + self._max_wait

    async def _narrowed(self, only: Next, model: str, remaining: list[str]) -> list[str]:
        """The candidates that can still help: zero-priced ones (402), or ones with a
        longer context than `model`'s (the input is too long for it)."""
        models: dict[str, ModelInfo] | None
        try:
            models = await self._catalogue.models()
        except UpstreamError:
            models = None
        if only is Next.FREE_ONLY:
            return [m for m in remaining if zero_priced(models, m)]
        return longer_context(models, model, remaining) if models is not None else []

    async def _ending(
        self, candidates: Sequence[str], held: dict[str, Holding], last: UpstreamError | None
    ) -> ProxyError:
        """The error when no candidate answered: a held model's own message when nothing
        was tried, else what the cooldowns and the last failure say."""
        if held and last is None:
            soonest = min(held.values(), key=lambda h: h.until)
            return RateLimited(soonest.message, retry_after=soonest.until - self._clock())
        now = self._clock()
        cooling = (await self._cooldowns.snapshot(candidates, now)).cooling
        return ending(candidates, cooling, now, last)


def _counted(error: ProxyError, tried: int) -> ProxyError:
    error.attempts = tried
    return error


async def _sleep_unless_gone(seconds: float, client_gone: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, _GONE_POLL_SECONDS))
        if await client_gone():
            raise ClientGone
