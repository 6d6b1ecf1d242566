"""One status snapshot (DESIGN §13): what the page, its event stream, `/v1/models`' cooldown
fields and `/metrics`' gauges of shared state show, assembled at most once per interval and
shared by every reader.

It reads the stores through their public methods only: the key ring and GET /v1/usage's own
code path for each key's limits, the daily totals for today and the last 14 days (never the
raw usage records, so it stays fast with millions of them), the cooldown store, the free
budget, the cache's stats, `/readyz`'s checks and the `Activity` of this process (merged
with every live replica's when Redis is set). Pages and
their event streams take it as it is within the interval; `/v1/models` and `/metrics` ask
for a `current` one, assembled again when this process has finished a request since, so
neither shows a cooldown or a budget one request old.
"""

from __future__ import annotations

import time
from typing import Any

from app.api.admin import usage_report
from app.api.health import ready_checks
from app.deps import Services
from app.errors import DatabaseError, DatabaseUnavailable, UpstreamError
from app.status.activity import merge
from app.status.board import Snapshot
from app.team.auth import Caller
from app.team.usage import DAY

CHART_DAYS = 14
# Today's requests by model: the page lists at most this many models.
MAX_MODELS_SHOWN = 100


async def assemble(services: Services) -> Snapshot:
    """Read every store once; the result is plain JSON-ready data."""
    now = services.clock()
    team = services.team
    try:
        rows = await team.usage_store.totals(key=None, days=CHART_DAYS, now=now)
    except (DatabaseUnavailable, DatabaseError):
        rows = []  # the health section names the database; /metrics must still answer
    daily = _Daily(rows, int(now // DAY))
    budget = await services.gate.free_budget(None)
    keys = await _keys(services, daily.today_key, now)
    seen = merge(await _exports(services), now)
    models, cooling, failing, catalogue = await _models(
        services, daily.today_model, seen["models"], now
    )
    checks = await ready_checks(services)
    stats = await services.cache.store.stats()
    redis = checks.get("redis")
    requests, hits = daily.today_requests, daily.today_hits
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
        "daily": {"days": daily.days, "by_key": daily.by_key, "by_model": daily.by_model},
        "cache": {
            "entries": stats.entries,
            "bytes": stats.bytes,
            "hit_rate_today": round(hits / requests, 3) if requests else None,
        },
        "overhead_ms": seen["overhead_ms"],
        "replicas": _replicas(services),
        "health": {
            "database": checks["database"],
            "redis": redis if redis is not None else {"ok": None, "detail": "not configured"},
        },
        "failures": seen["failures"],
    }


class _Daily:
    """The daily totals of the last CHART_DAYS days, by key and by model, and today's."""

    def __init__(self, rows: list[dict[str, Any]], today: int) -> None:
        days = [
            time.strftime("%Y-%m-%d", time.gmtime((today - i) * DAY)) for i in range(CHART_DAYS)
        ]
        days.reverse()
        self.days = days
        self.by_key: dict[str, dict[str, list[int]]] = {}
        self.by_model: dict[str, dict[str, list[int]]] = {}
        self.today_key: dict[str, list[int]] = {}
        self.today_model: dict[str, int] = {}
        self.today_requests = self.today_hits = 0
        column = {day: i for i, day in enumerate(days)}
        for row in rows:
            i = column.get(row["day"])
            if i is not None:
                self._add(row, i)

    def _add(self, row: dict[str, Any], i: int) -> None:
        tokens = row["prompt_tokens"] + row["completion_tokens"]
        for table, name in (
            (self.by_key, row["key"] or "(open)"),
            (self.by_model, row["model"] or "?"),
        ):
            series = table.setdefault(
                name, {"requests": [0] * CHART_DAYS, "tokens": [0] * CHART_DAYS}
            )
            series["requests"][i] += row["requests"]
            series["tokens"][i] += tokens
        if i == CHART_DAYS - 1:
            counts = self.today_key.setdefault(row["key"] or "(open)", [0, 0])
            counts[0] += row["requests"]
            counts[1] += tokens
            if row["model"]:
                model = row["model"]
                self.today_model[model] = self.today_model.get(model, 0) + row["requests"]
            self.today_requests += row["requests"]
            self.today_hits += row["cache_hits"]


async def _keys(
    services: Services, today_key: dict[str, list[int]], now: float
) -> list[dict[str, Any]]:
    """Every key not revoked, with its limits as GET /v1/usage reports them (its own code
    path) and what it used today."""
    keys = []
    for key in services.team.keyring.keys():
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
    return keys


async def _exports(services: Services) -> list[dict[str, Any]]:
    """This process's activity, and with Redis every live replica's."""
    if services.replicas_activity is None:
        return [services.activity.export()]
    return await services.replicas_activity.exports()


async def _models(
    services: Services,
    today_model: dict[str, int],
    recent: dict[str, dict[str, Any]],
    now: float,
) -> tuple[list[dict[str, Any]], dict[str, float], frozenset[str], list[str]]:
    """The models used today or lately (at most MAX_MODELS_SHOWN), each with its state;
    the cooling and failing ones of the catalogue; the catalogue's ids."""
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
    return models, cooling, failing, catalogue


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
