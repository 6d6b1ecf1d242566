"""What a walk writes down about each attempt: the model's marks in the cooldown store
(DESIGN §6), the attempt's outcome for the metrics and the status page (DESIGN §11), and
one log line per failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from app.errors import UpstreamError, UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from app.request_log import REQUEST_ID
from app.routing.catalogue import Catalogue
from app.routing.cooldowns import FAILING_SECONDS, CooldownStore
from app.routing.policy import Scope, Verdict, cooldown_until, judge

log = logging.getLogger("openrouter_proxy.fallback")


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


class Recording:
    def __init__(
        self,
        cooldowns: CooldownStore,
        catalogue: Catalogue,
        clock: Callable[[], float],
        recorder: AttemptRecorder | None = None,
    ) -> None:
        self._cooldowns = cooldowns
        self._catalogue = catalogue
        self._clock = clock
        self._recorder = recorder

    async def failed(self, model: str, error: UpstreamError, tried: int) -> Verdict:
        """What the failure says about the model, written to the cooldown store."""
        now = self._clock()
        verdict = judge(error, now)
        outcome = outcome_of(error, verdict)
        if self._recorder is not None:
            self._recorder.attempt(model, outcome)
        if verdict.scope is Scope.FREE_TIER:
            await self._cooldowns.cool_free_tier(cooldown_until(verdict, now, 1))
        elif verdict.scope is Scope.MODEL:
            failures = await self._cooldowns.failed(model)
            await self._cooldowns.cool(model, cooldown_until(verdict, now, failures))
        elif verdict.scope is Scope.FAILING:
            await self._cooldowns.mark_failing(model, now + FAILING_SECONDS)
        _log_failure(tried, model, error, outcome)
        return verdict

    def succeeded(self, model: str, started: float) -> Awaitable[None]:
        """A usable answer, counted as `ok`; the store's write that the model is healthy
        again (its latency kept if ranked) is the caller's to await, so the hot path
        awaits no more than that one write."""
        if self._recorder is not None:
            self._recorder.attempt(model, "ok")
        latency = time.monotonic() - started if self._ranked(model) else None
        return self._cooldowns.succeeded(model, latency)

    def _ranked(self, model: str) -> bool:
        """Only catalogue models are ranked by latency (`free`), so only their health is
        worth keeping: ids a client made up must leave no state behind (DESIGN §6)."""
        known = self._catalogue.loaded
        return known is not None and model in known


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
