"""Walk the candidates: skip cooling (rate-limited) models, try failing ones after the
others, wait briefly for a model that comes back soon (the one just tried included), and
stop at the first usable answer (DESIGN §6). One model per attempt; a model is tried again
only after its rate limit resets (at most `MAX_TRIES_PER_MODEL` times) or, when it is the
only candidate, once after a server failure.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from app.errors import (
    InvalidRequest,
    ProxyError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from app.free_tier import is_free_variant
from app.request_log import REQUEST_ID
from app.routing.catalogue import Catalogue
from app.routing.cooldowns import FAILING_SECONDS, CooldownStore
from app.routing.policy import Next, Scope, Verdict, cooldown_until, judge

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
log = logging.getLogger("openrouter_proxy.fallback")
# How often a waiting request checks whether its client is still there.
_GONE_POLL_SECONDS = 0.25
# A rate-limited model is waited for and tried again at most this often per request.
MAX_TRIES_PER_MODEL = 3
# A lone candidate that failed (not rate-limited) is tried again after a pause in this range.
RETRY_PAUSE_SECONDS = (0.2, 0.8)


class ClientGone(Exception):
    """The client left while its request waited; nobody is left to answer."""


class Hold(Protocol):
    """Something other than the model holds it back for this request only (the account's
    free allowance, DESIGN §7): treat it as cooling until `until`, cool it for nobody."""

    @property
    def until(self) -> float: ...
    @property
    def message(self) -> str: ...


Spend = Callable[[str], Awaitable[Hold | None]]


class Attempt(Protocol[T_co]):
    """One upstream attempt on `model`; `last` is true when no other model would follow,
    so a stream gets PROXY_FIRST_BYTE_TIMEOUT rather than the first-token timeout."""

    def __call__(self, model: str, *, last: bool) -> Awaitable[T_co]: ...


class AttemptRecorder(Protocol):
    """Told how each upstream attempt ended (the metrics, DESIGN §11); outcomes are
    `ok`, `rate_limited_provider`, `rate_limited_account`, `error`, `timeout`, `unreachable`."""

    def attempt(self, model: str, outcome: Any) -> None: ...


def outcome_of(error: UpstreamError, verdict: Verdict) -> str:
    """A failed attempt's outcome label: whose rate limit, or what kind of failure."""
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamUnreachable):
        return "unreachable"
    if isinstance(error, UpstreamRejected) and error.status == 429:
        return (
            "rate_limited_account" if verdict.scope is Scope.FREE_TIER else "rate_limited_provider"
        )
    return "error"


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
        max_attempts: int = 10,
        recorder: AttemptRecorder | None = None,
    ) -> None:
        self._recorder = recorder
        self._cooldowns = cooldowns
        self._catalogue = catalogue
        self._clock = clock
        self._max_wait = max_wait
        self._max_attempts = max_attempts

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
        remaining = list(candidates)
        tries: dict[str, int] = {}
        tried = 0
        waited = 0.0
        last: UpstreamError | None = None
        held: dict[str, Hold] = {}
        while remaining and tried < self._max_attempts:
            now = self._clock()
            states = await self._cooldowns.snapshot(remaining, now)
            cooling = dict(states.cooling) if held else states.cooling
            for model, hold in held.items():
                if model in remaining and hold.until > now:
                    cooling[model] = max(cooling.get(model, 0.0), hold.until)
            ready = [m for m in remaining if m not in cooling]
            if not ready:
                wait = min(cooling.values()) - now
                if wait > self._max_wait - waited:
                    break
                await _sleep_unless_gone(wait, client_gone)
                waited += wait
                continue
            model = next((m for m in ready if m not in states.failing), ready[0])
            if spend is not None and (holding := await spend(model)) is not None:
                held[model] = holding
                continue
            tried += 1
            tries[model] = tries.get(model, 0) + 1
            # Somewhere else to go: another model ready now, and attempts left for it.
            is_last = all(m == model for m in ready) or tried >= self._max_attempts
            started = time.monotonic()
            try:
                result = await attempt(model, last=is_last)
            except UpstreamError as error:
                verdict = await self._record(model, error)
                _log_failure(tried, model, error, outcome_of(error, verdict))
                last = error
                if verdict.next in (Next.RELAY, Next.STOP):
                    raise _with_attempts(error, tried) from None
                if verdict.scope is Scope.FAILING and len(candidates) == 1 and tries[model] == 1:
                    # One transient 5xx must not cost the client its own retry and backoff.
                    await _sleep_unless_gone(random.uniform(*RETRY_PAUSE_SECONDS), client_gone)
                    continue
                if verdict.scope not in (Scope.MODEL, Scope.FREE_TIER) or (
                    tries[model] >= MAX_TRIES_PER_MODEL
                ):
                    remaining.remove(model)  # a rate-limited one stays: its reset may be near
                if verdict.next is Next.FREE_ONLY:
                    remaining = [m for m in remaining if await self._zero_priced(m)]
                elif verdict.next is Next.LARGER_CONTEXT:
                    remaining = await self._longer_than(model, remaining)
                    if not remaining:
                        raise _with_attempts(error, tried) from None
                continue
            latency = time.monotonic() - started if self._ranked(model) else None
            await self._cooldowns.succeeded(model, latency)
            if self._recorder is not None:
                self._recorder.attempt(model, "ok")
            return Served(result, model, tried)
        if held and last is None:
            soonest = min(held.values(), key=lambda h: h.until)
            wait = soonest.until - self._clock()
            raise _with_attempts(RateLimited(soonest.message, retry_after=wait), tried)
        raise _with_attempts(await self._exhausted(candidates, last), tried)

    def longest(self, candidates: int, attempt_seconds: float) -> float:
        """The longest a walk over `candidates` models may take: every attempt it may make
        (a lone failing candidate twice, a rate-limited model up to MAX_TRIES_PER_MODEL
        times) lasting `attempt_seconds`, the lone candidate's pause and the waits for
        cooling models. An identical request in flight is followed no longer (DESIGN §12)."""
        attempts = min(self._max_attempts, MAX_TRIES_PER_MODEL * max(candidates, 1))
        return attempts * attempt_seconds + RETRY_PAUSE_SECONDS[1] + self._max_wait

    async def _record(self, model: str, error: UpstreamError) -> Verdict:
        """What the failure says about the model, written to the cooldown store."""
        now = self._clock()
        verdict = judge(error, now)
        if self._recorder is not None:
            self._recorder.attempt(model, outcome_of(error, verdict))
        if verdict.scope is Scope.FREE_TIER:
            await self._cooldowns.cool_free_tier(cooldown_until(verdict, now, 1))
        elif verdict.scope is Scope.MODEL:
            failures = await self._cooldowns.failed(model)
            await self._cooldowns.cool(model, cooldown_until(verdict, now, failures))
        elif verdict.scope is Scope.FAILING:
            await self._cooldowns.mark_failing(model, now + FAILING_SECONDS)
        return verdict

    def _ranked(self, model: str) -> bool:
        """Only catalogue models are ranked by latency (`free`), so only their health is
        worth keeping: ids a client made up must leave no state behind (DESIGN §6)."""
        known = self._catalogue.loaded
        return known is not None and model in known

    async def _longer_than(self, model: str, remaining: list[str]) -> list[str]:
        """The candidates whose known context length is larger than `model`'s."""
        try:
            models = await self._catalogue.models()
        except UpstreamError:
            return []
        info = models.get(model)
        limit = info.context_length if info is not None else None
        if limit is None:
            return []
        longer: list[str] = []
        for candidate in remaining:
            other = models.get(candidate)
            length = other.context_length if other is not None else None
            if length is not None and length > limit:
                longer.append(candidate)
        return longer

    async def _zero_priced(self, model: str) -> bool:
        try:
            info = (await self._catalogue.models()).get(model)
        except UpstreamError:
            info = None
        return info.is_free if info is not None else is_free_variant(model)

    async def _exhausted(self, candidates: Sequence[str], last: UpstreamError | None) -> ProxyError:
        """No candidate left: say which models are cooling and when they are back."""
        now = self._clock()
        cooling = (await self._cooldowns.snapshot(candidates, now)).cooling
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


def _log_failure(tried: int, model: str, error: UpstreamError, outcome: str) -> None:
    """One line per failed attempt with OpenRouter's message and `metadata.raw`, already
    redacted by the upstream client (DESIGN §5), tied to its request by id."""
    if not log.isEnabledFor(logging.INFO):
        return
    raw = error.metadata.get("raw") if isinstance(error, UpstreamRejected) else None
    fields: dict[str, Any] = {
        "id": REQUEST_ID.get(),
        "attempt": tried,
        "model": model,
        "outcome": outcome,
        "status": error.status if isinstance(error, UpstreamRejected) else error.status_code,
        "message": error.message,
    }
    if raw is not None:
        fields["raw"] = raw if isinstance(raw, str) else str(raw)
    text = f"id={fields['id']} attempt {tried}: {model} failed ({outcome}): {error.message}"
    if raw is not None:
        text += f" (raw: {fields['raw']})"
    log.info(text, extra={"fields": fields})


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
