"""Walk the candidates: skip cooling models, wait briefly for one that comes back soon,
cool what fails, and stop at the first usable answer (DESIGN §6). One model per attempt,
each model at most once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.catalogue import Catalogue
from app.cooldowns import CooldownStore, is_free_variant
from app.errors import InvalidRequest, ProxyError, RateLimited, UpstreamError, UpstreamRejected
from app.fallback import Next, Scope, cooldown_until, judge

T = TypeVar("T")
log = logging.getLogger("openrouter_proxy.fallback")
# How often a waiting request checks whether its client is still there.
_GONE_POLL_SECONDS = 0.25


class ClientGone(Exception):
    """The client left while its request waited; nobody is left to answer."""


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
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
    ) -> None:
        self._cooldowns = cooldowns
        self._catalogue = catalogue
        self._clock = clock
        self._max_wait = max_wait

    async def first_success(
        self,
        candidates: Sequence[str],
        attempt: Callable[[str], Awaitable[T]],
        client_gone: Callable[[], Awaitable[bool]],
    ) -> Served[T]:
        if not candidates:
            raise InvalidRequest(
                "No model in the catalogue fits this request (image input, tools or context "
                "length). Name a model that supports it.",
                param="model",
            )
        remaining = list(candidates)
        tried = 0
        waited = 0.0
        last: UpstreamError | None = None
        while remaining:
            now = self._clock()
            cooling = await self._cooldowns.cooling(remaining, now)
            ready = [m for m in remaining if m not in cooling]
            if not ready:
                wait = min(cooling.values()) - now
                if wait > self._max_wait - waited:
                    break
                await _sleep_unless_gone(wait, client_gone)
                waited += wait
                continue
            model = ready[0]
            remaining.remove(model)
            tried += 1
            started = time.monotonic()
            try:
                result = await attempt(model)
            except UpstreamError as error:
                log.info("attempt %d: %s failed: %s", tried, model, error.message)
                next_step = await self._cool(model, error)
                if next_step is Next.RELAY:
                    raise _with_attempts(error, tried) from None
                if next_step is Next.FREE_ONLY:
                    remaining = [m for m in remaining if await self._zero_priced(m)]
                last = error
                continue
            await self._cooldowns.succeeded(model, time.monotonic() - started)
            return Served(result, model, tried)
        raise _with_attempts(await self._exhausted(candidates, last), tried)

    async def _cool(self, model: str, error: UpstreamError) -> Next:
        now = self._clock()
        verdict = judge(error, now)
        if verdict.scope is Scope.FREE_TIER:
            await self._cooldowns.cool_free_tier(cooldown_until(verdict, now, 1))
        elif verdict.scope is Scope.MODEL:
            failures = await self._cooldowns.failed(model)
            await self._cooldowns.cool(model, cooldown_until(verdict, now, failures))
        return verdict.next

    async def _zero_priced(self, model: str) -> bool:
        try:
            info = (await self._catalogue.models()).get(model)
        except UpstreamError:
            info = None
        return info.is_free if info is not None else is_free_variant(model)

    async def _exhausted(self, candidates: Sequence[str], last: UpstreamError | None) -> ProxyError:
        """No candidate left: say which models are cooling and when they are back."""
        now = self._clock()
        cooling = await self._cooldowns.cooling(candidates, now)
        rate_limited = last is None or (isinstance(last, UpstreamRejected) and last.status == 429)
        if cooling and rate_limited:
            return _cooling_error(cooling, now, last)
        assert last is not None
        if len(candidates) > 1:
            last.message = (
                f"All {len(candidates)} candidate models failed or are cooling "
                f"({_some(candidates)}); the last error was: {last.message}"
            )
        return last


def _cooling_error(cooling: dict[str, float], now: float, last: UpstreamError | None) -> ProxyError:
    """429 with `Retry-After`; a relayed upstream 429 keeps its metadata (`raw` and all)."""
    soonest = min(cooling.values())
    listing = _some(
        [
            f"{model} in {_duration(until - now)} "
            f"(at {time.strftime('%H:%M:%S', time.gmtime(until))} UTC)"
            for model, until in sorted(cooling.items(), key=lambda item: item[1])
        ],
        sep="; ",
    )
    said = f" OpenRouter said: {last.message.strip()}" if last is not None else ""
    limited = RateLimited(
        f"Every candidate model is rate-limited or cooling; they come back: {listing}. "
        f"Retry in {_duration(soonest - now)}, or name another model.{said}",
        retry_after=soonest - now,
    )
    if isinstance(last, UpstreamRejected):
        last.message = limited.message
        last.headers.update(limited.headers)
        return last
    return limited


def _some(items: Sequence[str], sep: str = ", ", most: int = 8) -> str:
    """A readable list: a `free` pool can hold dozens of models."""
    shown = sep.join(items[:most])
    return shown if len(items) <= most else f"{shown}{sep}and {len(items) - most} more"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.999))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _with_attempts(error: ProxyError, tried: int) -> ProxyError:
    error.headers["X-Proxy-Attempts"] = str(tried)
    return error


async def _sleep_unless_gone(seconds: float, client_gone: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, _GONE_POLL_SECONDS))
        if await client_gone():
            raise ClientGone
