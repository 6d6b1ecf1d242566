"""What this process saw lately, for the status page (DESIGN §13): per-minute, per-model
attempt counts and latency histograms, the proxy's own overhead, and a ring of the last
failed requests.

Fed on the request path (`Attempts`' recorder and `Trace.finish`), so each call is a few
dict and list operations with no I/O. Bounded: at most MAX_MODELS models (the least
recently seen goes first, so ids made up by clients cannot grow it), WINDOW_MINUTES minutes
each, OVERHEAD_SAMPLES overhead samples and FAILURES failures. A failure keeps only what
the proxy itself knows (time, key name, route, model, status, its own error code): never
upstream text, a prompt, an answer or a secret.

The page reads `merge` of `export`s: this process's alone, or with Redis every live
replica's (app/shared/activity.py), so it shows the whole deployment.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The page shows success rate and p50 latency over this many minutes.
WINDOW_MINUTES = 15
MAX_MODELS = 512
OVERHEAD_SAMPLES = 4096
FAILURES = 50
# A model id longer than this is cut: OpenRouter's ids stay far below it.
MAX_SHOWN_CHARS = 200
# Milliseconds; the p50 shown is the upper bound of the bucket holding the median.
LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
# The proxy's own overhead, milliseconds: replicas share it as counts in these buckets.
OVERHEAD_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 1000)


@dataclass(slots=True)
class _Minute:
    minute: int
    ok: int = 0
    failed: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))


def _shown(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"


class Activity:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._models: OrderedDict[str, deque[_Minute]] = OrderedDict()
        self._overhead: deque[float] = deque(maxlen=OVERHEAD_SAMPLES)
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES)
        self.changes = 0  # requests finished and attempts failed: the state moved on

    def __len__(self) -> int:
        """Models held (a bound tests can check)."""
        return len(self._models)

    def _minute_of(self, model: str) -> _Minute:
        minute = int(self._clock() // 60)
        minutes = self._models.get(model)
        if minutes is None:
            if len(self._models) >= MAX_MODELS:
                self._models.popitem(last=False)
            minutes = self._models[model] = deque(maxlen=WINDOW_MINUTES)
        else:
            self._models.move_to_end(model)
        if not minutes or minutes[-1].minute != minute:
            minutes.append(_Minute(minute))
        return minutes[-1]

    def attempt(self, model: str, outcome: Any) -> None:
        """One upstream attempt (the `AttemptRecorder` of routing)."""
        counts = self._minute_of(model)
        if outcome == "ok":
            counts.ok += 1
        else:
            counts.failed += 1
            self.changes += 1

    def finished(
        self,
        *,
        key: str | None,
        route: str,
        model: str | None,
        served: str | None,
        status: int,
        error: str | None,
        latency_ms: float,
        overhead_ms: float | None,
    ) -> None:
        """One finished request (from `Trace.finish`)."""
        if served is not None and status < 400:
            bucket = bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)
            self._minute_of(served).latency[bucket] += 1
        self.changes += 1
        if overhead_ms is not None:
            self._overhead.append(max(overhead_ms, 0.0))
        if status >= 400:
            self.failures.append(
                {
                    "time": self._clock(),
                    "key": key,
                    "route": route,
                    "model": None if model is None else _shown(model),
                    "status": status,
                    "code": error or str(status),
                }
            )

    def export(self) -> dict[str, Any]:
        """What this replica saw, as plain JSON for `merge` (here or on another replica):
        the window's minutes per model, the overhead samples as a histogram, the failures."""
        since = int(self._clock() // 60) - WINDOW_MINUTES
        models = {
            model: [
                [m.minute, m.ok, m.failed, list(m.latency)] for m in minutes if m.minute > since
            ]
            for model, minutes in self._models.items()
        }
        overhead = [0] * (len(OVERHEAD_BUCKETS_MS) + 1)
        for sample in self._overhead:
            overhead[bisect.bisect_left(OVERHEAD_BUCKETS_MS, sample)] += 1
        return {
            "models": {model: minutes for model, minutes in models.items() if minutes},
            "overhead": overhead,
            "failures": list(self.failures),
        }


def merge(exports: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Several replicas' exports as the page shows them: each model's attempts, success
    rate and p50 over the window (counts and histograms summed), the overhead's p50/p99,
    and the latest FAILURES failures, newest first."""
    since = int(now // 60) - WINDOW_MINUTES
    totals: dict[str, list[Any]] = {}  # model -> ok, failed, latency counts
    overhead = [0] * (len(OVERHEAD_BUCKETS_MS) + 1)
    failures: list[dict[str, Any]] = []
    for export in exports:
        for model, minutes in export["models"].items():
            for minute, ok, failed, latency in minutes:
                if minute > since:
                    total = totals.setdefault(model, [0, 0, [0] * (len(LATENCY_BUCKETS_MS) + 1)])
                    total[0] += ok
                    total[1] += failed
                    _add(total[2], latency)
        _add(overhead, export["overhead"])
        failures.extend(export["failures"])
    failures.sort(key=lambda failure: failure["time"])
    return {
        "models": {
            model: {
                "attempts_15m": ok + failed,
                "success_rate": round(ok / (ok + failed), 3) if ok + failed else None,
                "p50_ms": _bucket(latency, 0.5, LATENCY_BUCKETS_MS),
            }
            for model, (ok, failed, latency) in totals.items()
        },
        "overhead_ms": {
            "p50": _bucket(overhead, 0.5, OVERHEAD_BUCKETS_MS),
            "p99": _bucket(overhead, 0.99, OVERHEAD_BUCKETS_MS),
        },
        "failures": failures[-FAILURES:][::-1],
    }


def _add(into: list[int], counts: list[int]) -> None:
    for index, count in enumerate(counts[: len(into)]):
        into[index] += count


def _bucket(counts: list[int], share: float, bounds: tuple[float, ...]) -> float | None:
    """The upper bound of the bucket holding the `share` quantile; None past the last."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= share * total:
            return bounds[index] if index < len(bounds) else None
    return None


class Recorders:
    """Several attempt recorders as one (the metrics and the activity)."""

    def __init__(self, *recorders: Any) -> None:
        self._recorders = recorders

    def attempt(self, model: str, outcome: Any) -> None:
        for recorder in self._recorders:
            recorder.attempt(model, outcome)
