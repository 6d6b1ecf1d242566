"""The key and usage stores: two small protocols, one SQLite and one Postgres implementation
of each (sqlite_stores.py, postgres.py), and the SQL they share (DESIGN §1, §7).

The statements are written once with `?` placeholders; postgres.py swaps them for `%s`.
A batch of usage records and the daily totals it adds are one transaction, and the totals
are incremented in SQL (`ON CONFLICT … DO UPDATE SET x = x + excluded.x`), never read
and written back, so replicas writing at once never lose a count.
"""

from __future__ import annotations

import builtins
import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any, Protocol

from app.team.keys import ApiKey
from app.team.usage import DAY, UsageRecord

_NAMES = tuple(f.name for f in fields(UsageRecord))
# A record as a row: attrgetter builds the tuple in C, where dataclasses.astuple deep-copies
# every field (a fifth of the server's CPU under load, on the writer thread).
record_row = operator.attrgetter(*_NAMES)
INSERT_RECORD = f"INSERT INTO usage ({', '.join(_NAMES)}) VALUES ({', '.join('?' * len(_NAMES))})"
_TOTALS = ("requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens", "cost")
ADD_TOTALS = (
    f"INSERT INTO usage_daily (day, key, model, {', '.join(_TOTALS)}) "
    f"VALUES ({', '.join('?' * (3 + len(_TOTALS)))}) ON CONFLICT (day, key, model) DO UPDATE SET "
    + ", ".join(f"{name} = usage_daily.{name} + excluded.{name}" for name in _TOTALS)
)
SELECT_TOTALS = f"SELECT day, key, model, {', '.join(_TOTALS)} FROM usage_daily WHERE day >= ?"
TOTALS_ORDER = " ORDER BY day, key, model"
# Retention: the oldest records first, a bounded number per transaction (usage_time index).
PRUNE = "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE time < ? LIMIT ?)"
LAST_USED = "SELECT key, MAX(day) FROM usage_daily WHERE day >= ? AND key <> '' GROUP BY key"
# Today's use as the daily limits count it (DESIGN §7): requests that reached an upstream
# or the cache, tokens of upstream answers (a hit costs none). The totals cannot tell a
# refused request from an admitted one, so this reads today's records (usage_key_time), which
# retention always keeps: it removes nothing younger than a day.
TODAY = (
    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN cache <> 'hit' "
    "THEN prompt_tokens + completion_tokens END), 0) "
    "FROM usage WHERE key = ? AND time >= ? AND (attempts > 0 OR cache = 'hit')"
)


def daily_totals(batch: Iterable[UsageRecord]) -> list[tuple[Any, ...]]:
    """ADD_TOTALS parameters: the batch summed per (day, key, model), so one batch adds one
    row per combination, in key order (two replicas' transactions lock the rows they share
    in the same order: no deadlock). The model is the one that answered, else the one
    requested."""
    sums: dict[tuple[int, str, str], list[Any]] = {}
    for record in batch:
        model = record.served_model or record.requested_model or ""
        group = (int(record.time // DAY), record.key or "", model)
        row = sums.setdefault(group, [0, 0, 0, 0, 0, 0.0])
        row[0] += 1
        row[1] += record.status >= 400
        row[2] += record.cache == "hit"
        row[3] += record.prompt_tokens
        row[4] += record.completion_tokens
        row[5] += record.cost or 0.0
    return [(*group, *sums[group]) for group in sorted(sums)]


def totals_query(key: str | None, days: int, now: float) -> tuple[str, list[Any]]:
    """The statement and parameters behind `usage --days N [--key K]` (today included)."""
    sql = SELECT_TOTALS
    params: list[Any] = [int(now // DAY) - (days - 1)]
    if key is not None:
        sql += " AND key = ?"
        params.append(key)
    return sql + TOTALS_ORDER, params


def totals_row(row: Sequence[Any]) -> dict[str, Any]:
    """A usage_daily row as `usage --json` and /admin/usage show it (DESIGN §2)."""
    day, key, model, requests, errors, hits, prompt, completion, cost = row
    return {
        "day": time.strftime("%Y-%m-%d", time.gmtime(int(day) * DAY)),
        "key": key or None,
        "model": model or None,
        "requests": int(requests),
        "errors": int(errors),
        "cache_hits": int(hits),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "cost": float(cost),
    }


def last_used_params(since: float) -> list[Any]:
    return [int(since // DAY)]


def last_used_time(day: int, now: float) -> float:
    """When a key last called, from its last day in the totals: that day's end, or now."""
    return min(float((int(day) + 1) * DAY), now)


class KeyStore(Protocol):
    """Client keys in the database of record (DESIGN §7). Raises InvalidRequest, KeyExists,
    NotFound as the HTTP API shows them, DatabaseUnavailable when the database cannot be
    used (or DatabaseError: one line for the command line)."""

    async def create(
        self,
        name: str,
        *,
        rpm: int | None = None,
        rpd: int | None = None,
        tpd: int | None = None,
        concurrency: int | None = None,
        models: Iterable[str] = (),
        paid: bool = False,
    ) -> str:
        """Store a new key; its secret, shown only this once."""

    async def revoke(self, name: str) -> ApiKey:
        """Revoke a key (a revoked key keeps its first revocation time)."""

    async def get(self, name: str) -> ApiKey: ...

    async def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first."""


class UsageStore(Protocol):
    """Usage records and their daily totals (DESIGN §7)."""

    async def write(self, batch: Sequence[UsageRecord]) -> None:
        """The records and the totals they add, in one transaction."""

    async def totals(self, *, key: str | None, days: int, now: float) -> list[dict[str, Any]]:
        """Rows per (day, key, model) of the last `days` UTC days, today included."""

    async def today(self, key: str, now: float) -> tuple[int, int]:
        """(requests, tokens) of `key` since 00:00 UTC, as the daily limits count them."""

    async def last_used(self, since: float, now: float) -> dict[str, float]:
        """When each key last called, for keys that called since `since`."""

    async def prune(self, before: float, limit: int) -> int:
        """Delete at most `limit` records older than `before`; how many went."""
