"""Per-key quotas (DESIGN §7): `rpm` over a sliding 60 s, `rpd` and `tpd` per UTC day, and
`concurrency` in flight, checked before any upstream call.

State sits behind the small `QuotaStore` protocol so that several replicas can share it
through Redis later; `MemoryQuotas` is the in-process store. Its `admit` checks and takes in
one synchronous stretch (no `await` between), so on one event loop two requests cannot both
take the last slot; a Redis store must do the same in one script. Which refusal to give and
the `x-ratelimit-*` headers are pure functions over the counts (`_refusal`,
`quota_views.ratelimit_headers`). Every limit is checked
before any is taken, so a refused request counts toward nothing. Times are epoch seconds,
because the daily limits reset at 00:00 UTC.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from app.errors import QuotaExceeded

MINUTE = 60.0
DAY = 86400.0
# A full concurrency slot frees when some request ends, which nobody can predict.
CONCURRENCY_RETRY_SECONDS = 1


class KeyLimits(Protocol):
    """What the team stage reads of a key; `app.team.keys.ApiKey` satisfies it."""

    @property
    def name(self) -> str: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def rpd(self) -> int | None: ...
    @property
    def tpd(self) -> int | None: ...
    @property
    def concurrency(self) -> int | None: ...
    @property
    def models(self) -> tuple[str, ...]: ...
    @property
    def paid(self) -> bool: ...


class LimitView(TypedDict):
    limit: int
    used: int
    remaining: int
    resets_at: float | None  # when `used` is back to 0; None if it is 0, or unknowable


def next_midnight(now: float) -> float:
    """The next 00:00 UTC, when daily counts reset (as OpenRouter's do)."""
    return (math.floor(now / DAY) + 1) * DAY


def reset_duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` text: Go duration syntax (`12ms`, `41s`, `6m0s`,
    `1h2m3s`), which clients such as go-openai parse with `time.ParseDuration`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    hours, rest = divmod(math.ceil(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class Grant:
    """What `admit` granted: the key's counts with this request in them, and the
    concurrency lease to hand back to `release` when the request ends (None: no slot)."""

    views: dict[str, LimitView | None]
    lease: int | None = None


class QuotaStore(Protocol):
    """Per-key counts. Each operation is one atomic step: a shared store runs it as one
    script per key, never a read followed by a write."""

    async def admit(self, key: KeyLimits | None, now: float) -> Grant:
        """Check every limit of `key` and, when all admit, count the request toward `rpm`
        and `rpd` and take a concurrency lease, all in one step; else raise QuotaExceeded
        (the refusal whose wait is longest) and count nothing."""

    async def release(self, key: KeyLimits, lease: int) -> None:
        """Hand back a concurrency lease; a lease already handed back frees nothing."""

    async def add_tokens(
        self, key: KeyLimits | None, tokens: int, now: float | None = None
    ) -> None:
        """Count an answer's tokens toward `tpd` (cache hits are not counted)."""

    async def seed(self, name: str, requests: int, tokens: int, now: float) -> None:
        """Start key `name`'s `rpd`/`tpd` counts for today at what its usage records say,
        so a restart does not hand every key a fresh day (the sliding minute and the
        leases start empty: both are over within a minute of a restart)."""

    async def snapshot(self, key: KeyLimits | None, now: float) -> dict[str, LimitView | None]:
        """`rpm`, `rpd`, `tpd`, `concurrency` now; None for absent limits. Counts nothing."""


_NO_LIMITS: dict[str, LimitView | None] = {
    "rpm": None,
    "rpd": None,
    "tpd": None,
    "concurrency": None,
}
NO_GRANT = Grant(_NO_LIMITS)


def _is_limited(key: KeyLimits) -> bool:
    return not (key.rpm is None and key.rpd is None and key.tpd is None and key.concurrency is None)


class _Window(Sized, Protocol):
    """The sliding minute as the rules read it: how many, and one admission time by place."""

    def __getitem__(self, index: int, /) -> float: ...


class _Seen(Protocol):
    """What the rules read of a key's counts: memory's `_Counts`, or what Redis returned."""

    @property
    def minute(self) -> _Window: ...
    @property
    def requests(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def leases(self) -> Sized: ...


@dataclass(slots=True)
class _Counts:
    minute: deque[float] = field(default_factory=deque)  # admission times, newest last
    day: int = -1
    requests: int = 0
    tokens: int = 0
    leases: set[int] = field(default_factory=set)  # concurrency leases in flight

    def roll(self, now: float) -> None:
        """Forget what left the 60 s window and, on a new UTC day, the daily counts."""
        while self.minute and self.minute[0] <= now - MINUTE:
            self.minute.popleft()
        day = math.floor(now / DAY)
        if day != self.day:
            self.day, self.requests, self.tokens = day, 0, 0


class MemoryQuotas:
    """In-process quotas; `clock` (epoch seconds) dates tokens added without a `now`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[str, _Counts] = {}
        self._leases = itertools.count(1)

    def _of(self, key: KeyLimits, now: float) -> _Counts:
        counts = self._counts.get(key.name)
        if counts is None:
            counts = self._counts[key.name] = _Counts()
        counts.roll(now)
        return counts

    async def seed(self, name: str, requests: int, tokens: int, now: float) -> None:
        counts = self._counts.setdefault(name, _Counts())
        counts.roll(now)
        counts.requests, counts.tokens = requests, tokens

    async def admit(self, key: KeyLimits | None, now: float) -> Grant:
        if key is None or not _is_limited(key):
            return NO_GRANT
        # No await from here to the return: on one event loop this is one atomic step.
        counts = self._of(key, now)
        refusal = _refusal(key, counts, now)
        if refusal is not None:
            raise refusal
        if key.rpm is not None:
            counts.minute.append(now)
        counts.requests += 1
        lease = None
        if key.concurrency is not None:
            lease = next(self._leases)
            counts.leases.add(lease)
        return Grant(_views(key, counts, now), lease)

    async def release(self, key: KeyLimits, lease: int) -> None:
        counts = self._counts.get(key.name)
        if counts is not None:
            counts.leases.discard(lease)

    async def add_tokens(
        self, key: KeyLimits | None, tokens: int, now: float | None = None
    ) -> None:
        if key is None or key.tpd is None or tokens <= 0:
            return
        self._of(key, self._clock() if now is None else now).tokens += tokens

    async def snapshot(self, key: KeyLimits | None, now: float) -> dict[str, LimitView | None]:
        if key is None:
            return _NO_LIMITS
        return _views(key, self._of(key, now), now)


def _refusal(key: KeyLimits, counts: _Seen, now: float) -> QuotaExceeded | None:
    """The refusal whose wait is longest (retrying sooner would only be refused again)."""
    midnight = next_midnight(now)
    waits: list[tuple[float, str, str]] = []
    if key.rpm is not None and len(counts.minute) >= key.rpm:
        # The oldest admissions must leave the window until one slot is free.
        over = len(counts.minute) - key.rpm
        wait = counts.minute[over] + MINUTE - now if key.rpm > 0 else MINUTE
        waits.append((wait, "rpm", f"rpm limit of {key.rpm} requests per minute"))
    if key.rpd is not None and counts.requests >= key.rpd:
        waits.append((midnight - now, "rpd", f"rpd limit of {key.rpd} requests per day"))
    if key.tpd is not None and counts.tokens >= key.tpd:
        waits.append((midnight - now, "tpd", f"tpd limit of {key.tpd} tokens per day"))
    if key.concurrency is not None and len(counts.leases) >= key.concurrency:
        limit = f"concurrency limit of {key.concurrency} requests at a time"
        waits.append((CONCURRENCY_RETRY_SECONDS, "concurrency", limit))
    if not waits:
        return None
    wait, name, limit = max(waits, key=lambda w: w[0])
    seconds = max(1, math.ceil(wait))
    why = {
        "rpd": ", after 00:00 UTC",
        "tpd": ", after 00:00 UTC",
        "concurrency": ", or when one of them ends",
    }.get(name, "")
    return QuotaExceeded(
        f"{limit} reached for key '{key.name}'; retry in {seconds} s{why}",
        retry_after=seconds,
        limit=name,
        key_name=key.name,
    )


def _views(key: KeyLimits, counts: _Seen, now: float) -> dict[str, LimitView | None]:
    midnight = next_midnight(now)

    def view(limit: int | None, used: int, resets_at: float | None) -> LimitView | None:
        if limit is None:
            return None
        return {
            "limit": limit,
            "used": used,
            "remaining": max(0, limit - used),
            "resets_at": resets_at if used > 0 else None,
        }

    minute = counts.minute
    return {
        "rpm": view(key.rpm, len(minute), minute[-1] + MINUTE if minute else None),
        "rpd": view(key.rpd, counts.requests, midnight),
        "tpd": view(key.tpd, counts.tokens, midnight),
        "concurrency": view(key.concurrency, len(counts.leases), None),
    }
