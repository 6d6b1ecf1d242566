"""Fallback policy: which failed attempts may move on to the next model, and what the failure
says about the model: rate-limited (skipped until its reset) or failing (only tried after
the others, DESIGN §6). One reason per line, as openai-python's `_should_retry` does;
sources are DESIGN §6 and openrouter-api.md §4.2, §5.4 and Appendix B.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)

# Exponential backoff for failures that say nothing about when to come back.
BACKOFF_START = 15.0
BACKOFF_MAX = 300.0
# No hint is trusted beyond a day: the longest real limit resets at 00:00 UTC.
MAX_COOLDOWN = 86_400.0


class Scope(Enum):
    MODEL = "model"  # rate-limited: only the model that failed is skipped
    FREE_TIER = "free-tier"  # every `:free` model: the account-wide limits
    FAILING = "failing"  # a server failure: tried after the others, never skipped


class Next(Enum):
    ANY = "any"  # try the next candidate
    FREE_ONLY = "free-only"  # only a zero-priced candidate can help (402)
    RELAY = "relay"  # the same input fails everywhere: relay this error
    STOP = "stop"  # OpenRouter itself is unreachable: every candidate is behind it
    LARGER_CONTEXT = "larger-context"  # only a model with a longer context can help


@dataclass(frozen=True, slots=True)
class Verdict:
    next: Next
    scope: Scope | None  # None: no cooldown
    reset_at: float | None = None  # epoch seconds from the error, if it said


def judge(error: UpstreamError, now: float) -> Verdict:
    """Decide what a failed attempt means for this request and for the model."""
    if isinstance(error, UpstreamUnreachable):
        return Verdict(Next.STOP, None)  # connect refused, DNS, TLS: not the model's fault
    if isinstance(error, UpstreamTimeout | UpstreamBroken):
        return Verdict(Next.ANY, Scope.FAILING)  # timeout/garbled: another model may work
    assert isinstance(error, UpstreamRejected)
    status, message = error.status, error.message
    limit_source = str(error.metadata.get("limit_source") or "")
    reset = _reset_at(error, now)
    if status == 429:
        if "free-models-per-day" in message or limit_source == "openrouter_free_tier_daily":
            return Verdict(Next.ANY, Scope.FREE_TIER, reset or _next_midnight_utc(now))
        if "free-models-per-min" in message or "free_tier" in limit_source:
            return Verdict(Next.ANY, Scope.FREE_TIER, reset or _next_minute(now))
        return Verdict(Next.ANY, Scope.MODEL, reset)  # provider or per-model cap: this one
    if status in (408, 524, 529) or status >= 500:
        return Verdict(Next.ANY, Scope.FAILING)  # timeout, overload, model down: not a limit
    if status == 404 and message.startswith("No endpoints found for "):
        return Verdict(Next.ANY, Scope.FAILING)  # the model has no provider now
    if status == 404 and message.startswith("No endpoints found"):
        return Verdict(Next.ANY, None)  # none that supports this request: it's not the model
    if status == 400 and "not a valid model ID" in message:
        # Model-specific: skip to the next. Not cooled, so that asking for it again gets
        # OpenRouter's 400 (a typo), not a 429 saying it is cooling.
        return Verdict(Next.ANY, None)
    if status == 400 and _is_context_length(error):
        return Verdict(Next.LARGER_CONTEXT, None)  # the input is too long for this model
    if status == 402:
        return Verdict(Next.FREE_ONLY, None)  # credits: another paid model won't help
    return Verdict(Next.RELAY, None)  # 400/401/403/413/422: the same input fails everywhere


def _is_context_length(error: UpstreamRejected) -> bool:
    text = f"{error.code} {error.message} {error.metadata.get('raw') or ''}".lower()
    return "context_length_exceeded" in text or "maximum context length" in text


def cooldown_until(verdict: Verdict, now: float, failures: int) -> float:
    """When the model (or the free tier) comes back: the error's own hint, else backoff."""
    if verdict.reset_at is not None and verdict.reset_at > now:
        return min(verdict.reset_at, now + MAX_COOLDOWN)
    backoff: float = min(BACKOFF_START * 2.0 ** max(failures - 1, 0), BACKOFF_MAX)
    return now + backoff


def _next_minute(now: float) -> float:
    return (now // 60 + 1) * 60


def _next_midnight_utc(now: float) -> float:
    return (now // 86_400 + 1) * 86_400


def _reset_at(error: UpstreamRejected, now: float) -> float | None:
    """`X-RateLimit-Reset` is epoch milliseconds; `Retry-After` is seconds from now."""
    headers = error.upstream_headers
    try:
        if (reset := headers.get("x-ratelimit-reset")) is not None:
            return float(reset) / 1000
        if (retry_after := headers.get("retry-after")) is not None:
            return now + float(retry_after)
    except ValueError:
        return None
    return None
