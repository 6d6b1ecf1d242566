"""The error a walk ends with when no candidate answered (DESIGN §6): which models are
cooling and when they are back, or the last failure in the words of every candidate.
This is the one place a walk rewrites an upstream message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from app.errors import ProxyError, RateLimited, UpstreamError, UpstreamRejected


def ending(
    candidates: Sequence[str], cooling: dict[str, float], now: float, last: UpstreamError | None
) -> ProxyError:
    """No candidate left: say which models are cooling and when they are back."""
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
