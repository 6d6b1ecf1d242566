"""The status page's activity (DESIGN §13): what one replica exports and what the page
shows once several replicas' exports are merged."""

from __future__ import annotations

import json

from app.status.activity import FAILURES, Activity, merge

NOW = 1_000_000.0


def finished(activity: Activity, *, status: int = 200, latency_ms: float = 40.0) -> None:
    activity.finished(
        key="alice",
        route="/v1/chat/completions",
        model="m",
        served="m",
        status=status,
        error=None if status < 400 else "upstream_error",
        latency_ms=latency_ms,
        overhead_ms=0.4,
    )


def test_two_exports_merge_into_summed_counts_a_p50_of_both_and_the_latest_failures() -> None:
    clock = [NOW]
    one, other = Activity(lambda: clock[0]), Activity(lambda: clock[0])
    for _ in range(3):
        one.attempt("m", "ok")
        finished(one, latency_ms=40)  # the 50 ms bucket
    other.attempt("m", "ok")
    other.attempt("m", "failed")
    for _ in range(30):
        clock[0] += 1
        finished(one, status=502)
        clock[0] += 1
        finished(other, status=429)
    for _ in range(5):
        finished(other, latency_ms=400)  # the 500 ms bucket: 5 of 8 there, so the p50
    exports = [json.loads(json.dumps(one.export())), json.loads(json.dumps(other.export()))]

    seen = merge(exports, clock[0])

    assert seen["models"]["m"] == {"attempts_15m": 5, "success_rate": 0.8, "p50_ms": 500}
    assert seen["overhead_ms"] == {"p50": 0.5, "p99": 0.5}
    times = [failure["time"] for failure in seen["failures"]]
    assert len(times) == FAILURES and times == sorted(times, reverse=True)
    assert times[0] == clock[0]  # the newest first: the other's last failure
    assert {f["status"] for f in seen["failures"]} == {502, 429}


def test_minutes_older_than_the_window_are_left_out_of_the_merge() -> None:
    clock = [NOW]
    activity = Activity(lambda: clock[0])
    activity.attempt("old", "ok")
    export = activity.export()
    clock[0] += 16 * 60
    activity.attempt("new", "failed")

    assert merge([export], clock[0])["models"] == {}
    assert merge([activity.export()], clock[0])["models"] == {
        "new": {"attempts_15m": 1, "success_rate": 0.0, "p50_ms": None}
    }
