"""Whether a walk goes on after a failed attempt, and with which models (DESIGN §6).
`policy.judge` says what a failure means; this table says what the walk does about it,
one reason per line.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.routing.policy import Next, Scope, Verdict

# A rate-limited model is waited for and tried again at most this often per request.
MAX_TRIES_PER_MODEL = 3


@dataclass(frozen=True, slots=True)
class Again:
    stop: bool = False  # relay this error: no other model can help
    pause: bool = False  # pause, then try the same model again
    keep: bool = False  # the model stays a candidate
    only: Next | None = None  # narrow the others: FREE_ONLY or LARGER_CONTEXT


STOP = Again(stop=True)
PAUSE = Again(pause=True, keep=True)
KEEP = Again(keep=True)
DROP = Again()
_NARROWING = (Next.FREE_ONLY, Next.LARGER_CONTEXT)


def again(verdict: Verdict, *, lone: bool, tries: int) -> Again:
    """After `tries` attempts on one model of `lone` (the only candidate) or several."""
    if verdict.next in (Next.RELAY, Next.STOP):
        return STOP  # the same input fails everywhere, or OpenRouter is unreachable
    if verdict.scope is Scope.FAILING and lone and tries == 1:
        return PAUSE  # one transient 5xx must not cost the client its own retry and backoff
    # A rate-limited one stays, its reset may be near; up to MAX_TRIES_PER_MODEL tries.
    limited = verdict.scope in (Scope.MODEL, Scope.FREE_TIER) and tries < MAX_TRIES_PER_MODEL
    if verdict.next in _NARROWING:
        return Again(keep=limited, only=verdict.next)  # 402: free only; 400: longer context
    return KEEP if limited else DROP  # anything else: on to the next model
