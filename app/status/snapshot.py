"""One status snapshot (DESIGN §13): what the page, its event stream, `/v1/models`' cooldown
fields and `/metrics`' gauges of shared state show, assembled at most once per interval and
shared by every reader.

It reads the stores through their public methods only: the key ring and GET /v1/usage's own
code path for each key's limits, the daily totals for today and the last 14 days (never the
raw usage records, so it stays fast with millions of them), the cooldown store, the free
budget, the cache's stats, `/readyz`'s checks and this process's `Activity`. Pages and
their event streams take it as it is within the interval; `/v1/models` and `/metrics` ask
for a `current` one, assembled again when this process has finished a request since, so
neither shows a cooldown or a budget one request old.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.errors import DatabaseUnavailable, UpstreamError
from app.team.auth import Caller
from app.team.db import DatabaseError
from app.team.usage import DAY

if TYPE_CHECKING:
    from app.deps import Services

# Seconds between two assemblies at most (every open page shares one).
INTERVAL_SECONDS = 1.0
CHART_DAYS = 14
# Today's requests by model: the page lists at most this many models.
MAX_MODELS_SHOWN = 100

Snapshot = dict[str, Any]


class StatusBoard:
    """Holds the latest snapshot; `get` assembles a new one when it is older than the
    interval (one assembly at a time, the others wait for it)."""

    def __init__(
        self,
        interval: float = INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._monotonic = monotonic
        self._latest: Snapshot | None = None
        self._built_at = 0.0
        self._changes = -1
        self._lock = asyncio.Lock()
        self.assemblies = 0  # how many were built (a bound tests and the bench can check)

    def _fresh(self, services: Services, current: bool) -> bool:
        return (
            self._latest is not None
            and self._monotonic() - self._built_at < self._interval
            and (not current or services.activity.changes == self._changes)
        )

    def invalidate(self) -> None:
        """Keys changed: the next reader assembles a new snapshot."""
        self._latest = None

    async def get(self, services: Services, *, current: bool = False) -> Snapshot:
        """The snapshot; `current`: not older than this process's last finished request."""
        if self._fresh(services, current):
            assert self._latest is not None
            return self._latest
        async with self._lock:
            if not self._fresh(services, current):
                changes = services.activity.changes
                self._latest = await assemble(services)
                self._built_at = self._monotonic()
                self._changes = changes
                self.assemblies += 1
            assert self._latest is not None
            return self._latest


async def assemble(services: Services) -> Snapshot:
    """Read every store once; the result is plain JSON-ready data."""
    # Imported here: both modules import app.deps, which holds the board.
    from app.api.admin import usage_report  # GET /v1/usage's own code path
    from app.api.health import ready_checks  # the same checks as /readyz

    now = services.clock()
    team = services.team
    today = int(now // DAY)
    try:
        rows = await team.usage_store.totals(key=None, days=CHART_DAYS, now=now)
    except (DatabaseUnavailable, DatabaseError):
        rows = []  # the health section names the database; /metrics must still answer
    days = [time.strftime("%Y-%m-%d", time.gmtime((today - i) * DAY)) for i in range(CHART_DAYS)]
    days.reverse()
    column = {day: i for i, day in enumerate(days)}
    by_key: dict[str, dict[str, list[int]]] = {}
    by_model: dict[str, dict[str, list[int]]] = {}
    today_key: dict[str, list[int]] = {}
    today_model: dict[str, int] = {}
    today_requests = today_hits = 0
    for row in rows:
        i = column.get(row["day"])
        if i is None:
            continue
        tokens = row["prompt_tokens"] + row["completion_tokens"]
        for table, name in ((by_key, row["key"] or "(open)"), (by_model, row["model"] or "?")):
            series = table.setdefault(
                name, {"requests": [0] * CHART_DAYS, "tokens": [0] * CHART_DAYS}
            )
            series["requests"][i] += row["requests"]
            series["tokens"][i] += tokens
        if i == CHART_DAYS - 1:
            counts = today_key.setdefault(row["key"] or "(open)", [0, 0])
            counts[0] += row["requests"]
            counts[1] += tokens
            if row["model"]:
                today_model[row["model"]] = today_model.get(row["model"], 0) + row["requests"]
            today_requests += row["requests"]
            today_hits += row["cache_hits"]

    budget = await services.gate.free_budget(None)
    keys = []
    for key in team.keyring.keys():
        if key.revoked is not None:
            continue
        report = await usage_report(Caller(key), services.gate, now)
        requests, tokens = today_key.get(key.name, [0, 0])
        keys.append(
            {
                "name": key.name,
                "limits": report["limits"],
                "used": report["used"],
                "remaining": report["remaining"],
                "resets_at": report["resets_at"],
                "requests_today": requests,
                "tokens_today": tokens,
                "fair_share": report["free_budget"]["share"],
                "paid": key.paid,
            }
        )

    recent = services.activity.models()
    try:
        catalogue = list(await services.catalogue.models())
    except UpstreamError:
        catalogue = []
    watched = list(dict.fromkeys([*catalogue, *today_model, *recent]))
    states = await services.cooldowns.snapshot(watched, now)
    cooling, failing = states.cooling, states.failing
    used = sorted(
        set(today_model) | set(recent) | set(cooling).difference(catalogue),
        key=lambda m: (-today_model.get(m, 0), m),
    )[:MAX_MODELS_SHOWN]
    models = []
    for model in used:
        state = "cooling" if model in cooling else "failing" if model in failing else "ready"
        models.append(
            {
                "id": model,
                "requests_today": today_model.get(model, 0),
                "state": state,
                "cooling_until": cooling.get(model),
                **recent.get(model, {"attempts_15m": 0, "success_rate": None, "p50_ms": None}),
            }
        )

    checks = await ready_checks(services)
    stats = await services.cache.store.stats()
    redis = checks.get("redis")
    return {
        "generated_at": now,
        "mode": "open" if team.keyring.open_mode else "keys",
        "free_budget": {
            "limit_today": budget["account_limit_today"],
            "remaining_today": budget["account_remaining_today"],
            "resets_at": budget["resets_at"],
        },
        "keys": keys,
        "models": models,
        "cooling": cooling,
        "failing": sorted(failing),
        "catalogue_models": len(catalogue),
        "daily": {"days": days, "by_key": by_key, "by_model": by_model},
        "cache": {
            "entries": stats.entries,
            "bytes": stats.bytes,
            "hit_rate_today": round(today_hits / today_requests, 3) if today_requests else None,
        },
        "overhead_ms": services.activity.overhead_ms(),
        "replicas": _replicas(services),
        "health": {
            "database": checks["database"],
            "redis": redis if redis is not None else {"ok": None, "detail": "not configured"},
        },
        "failures": list(reversed(services.activity.failures)),
    }


def _replicas(services: Services) -> dict[str, Any]:
    """How many replicas share the state: the live heartbeats with Redis, else this one."""
    failover = services.failover
    if failover is None:
        return {
            "alive": 1,
            "note": "this process only: replicas share their state once PROXY_REDIS_URL is set",
        }
    if failover.up:
        return {"alive": failover.alive}
    return {"alive": failover.alive, "note": "last seen alive: Redis is unreachable"}
