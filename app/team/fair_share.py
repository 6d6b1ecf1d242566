"""The rules over the account's free allowance (DESIGN §7 "Budget" and "Fair share"):
which keys are active, and whether one more `:free` call may go up. Pure functions over
the counts a `BudgetStore` holds, so every store decides the same way.

- Per minute: a sliding 60 s window. OpenRouter counts fixed minutes, but any fixed minute
  lies inside some sliding one, so the sliding count never exceeds OpenRouter's.
- Per UTC day: the configured allowance, or the one GET /key reports once followed.
- Fair share: each active key (not revoked, created or used in the last 7 days; the caller
  always counts) is guaranteed `limit // n` requests a day. A key past its share is served
  only while, after its call, what remains covers every other key's unused share. Those
  reserves shrink linearly to zero over the last 4 hours of the UTC day (rounded down), so
  nothing is left unused merely for a key that never came. Open mode is one pool.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from app.team.quotas import DAY, MINUTE, next_midnight

# A key counts as active for the fair share when created or used this recently.
ACTIVE_SECONDS = 7 * 86400.0
# Reserves for keys that have not used their share shrink to zero over this last stretch.
RELEASE_SECONDS = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Why a `:free` call may not go up now, and when that changes."""

    reason: Literal["minute", "day", "share"]
    until: float
    limit: int  # the per-minute or per-day allowance
    share: int = 0
    used_by_key: int = 0
    others: int = 0  # keys whose unused shares are held


@dataclass(slots=True)
class FreeCounts:
    """The account's free calls as a store holds them: the rules read only this."""

    rpm: int
    rpd: int
    followed: int | None = None  # the daily allowance GET /key reported, once seen
    minute: deque[float] = field(default_factory=deque)  # the proxy's calls, newest last
    day: int = -1
    by_key: dict[str | None, int] = field(default_factory=dict)
    spent: int = 0  # the proxy's calls today, sum of by_key
    outside: int = 0  # today's calls OpenRouter counted that the proxy did not make

    @property
    def limit(self) -> int:
        return self.rpd if self.followed is None else self.followed

    @property
    def remaining(self) -> int:
        return self.limit - self.spent - self.outside

    def roll(self, now: float) -> None:
        """Forget what left the 60 s window and, on a new UTC day, the daily counts."""
        while self.minute and self.minute[0] <= now - MINUTE:
            self.minute.popleft()
        day = math.floor(now / DAY)
        if day != self.day:
            self.day, self.by_key, self.spent, self.outside = day, {}, 0, 0


def active_keys(
    members: Mapping[str, float], last_used: Mapping[str, float], caller: str | None, now: float
) -> set[str | None]:
    """The keys sharing the allowance: of `members` (name → created, revoked ones left
    out), those created or used lately, and the caller always."""
    since = now - ACTIVE_SECONDS
    keys: set[str | None] = {
        name
        for name, created in members.items()
        if created >= since or last_used.get(name, 0.0) >= since
    }
    keys.add(caller)
    return keys


def refusal(
    counts: FreeCounts, caller: str | None, keys: set[str | None], now: float
) -> BudgetRefusal | None:
    """Whether one more call by `caller` must wait (the longest wait of every reason)."""
    refusals: list[BudgetRefusal] = []
    if len(counts.minute) >= counts.rpm:
        over = len(counts.minute) - counts.rpm
        until = counts.minute[over] + MINUTE if counts.rpm > 0 else now + MINUTE
        refusals.append(BudgetRefusal("minute", until, counts.rpm))
    if counts.remaining < 1:
        refusals.append(BudgetRefusal("day", next_midnight(now), counts.limit))
    elif (share := _share_refusal(counts, caller, keys, now)) is not None:
        refusals.append(share)
    return max(refusals, key=lambda r: r.until, default=None)


def _share_refusal(
    counts: FreeCounts, caller: str | None, keys: set[str | None], now: float
) -> BudgetRefusal | None:
    if len(keys) < 2:
        return None
    share = counts.limit // len(keys)
    mine = counts.by_key.get(caller, 0)
    if mine < share:
        return None
    unused = [share - counts.by_key.get(k, 0) for k in keys if k != caller]
    reserve = sum(u for u in unused if u > 0)
    remaining = counts.remaining
    # Allowed iff floor(reserve * factor) <= remaining - 1, i.e. reserve * factor < remaining.
    if reserve * _reserve_factor(now) < remaining:
        return None
    # The factor falls linearly to 0 at midnight: find when it drops below remaining/reserve.
    until = next_midnight(now) - RELEASE_SECONDS * remaining / reserve + 0.001
    others = sum(1 for u in unused if u > 0)
    return BudgetRefusal("share", until, counts.limit, share, mine, others)


def _reserve_factor(now: float) -> float:
    """1 until 20:00 UTC, then down linearly to 0 at midnight."""
    return min(1.0, (next_midnight(now) - now) / RELEASE_SECONDS)
