"""Per-key quotas with an injected wall clock: what a limited key's client sees."""

from __future__ import annotations

import asyncio
import calendar
from dataclasses import dataclass

import orjson
import pytest

from app.api.render import error_response
from app.errors import QuotaExceeded
from app.team.quota_views import ratelimit_headers, usage_fields
from app.team.quotas import Grant, MemoryQuotas, reset_duration

pytestmark = pytest.mark.anyio

# 2025-06-01 08:00:00 UTC, and that day's last minute.
MORNING = float(calendar.timegm((2025, 6, 1, 8, 0, 0)))
MIDNIGHT = float(calendar.timegm((2025, 6, 2, 0, 0, 0)))


@dataclass(frozen=True)
class Key:
    """Shaped like app.team.keys.ApiKey, which the quotas read structurally."""

    name: str = "alice"
    rpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    concurrency: int | None = None
    models: tuple[str, ...] = ()
    paid: bool = False


def quotas() -> MemoryQuotas:
    return MemoryQuotas(clock=lambda: MORNING)


async def refused(store: MemoryQuotas, key: Key, now: float) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as caught:
        await store.admit(key, now)
    return caught.value


async def test_rpm_is_a_sliding_minute_and_names_the_limit():
    store, key = quotas(), Key(rpm=2)
    await store.admit(key, MORNING)
    await store.admit(key, MORNING + 19)

    error = await refused(store, key, MORNING + 19)
    assert error.message == (
        "rpm limit of 2 requests per minute reached for key 'alice'; retry in 41 s"
    )
    assert error.headers == {"retry-after": "41"}
    assert (error.limit, error.key_name) == ("rpm", "alice")
    # The first admission leaves the window 60 s later; the second still holds a slot.
    await store.admit(key, MORNING + 60)
    await refused(store, key, MORNING + 60)


async def test_the_429_is_openai_shaped():
    store, key = quotas(), Key(rpm=1)
    await store.admit(key, MORNING)
    response = error_response(await refused(store, key, MORNING + 0.5))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    assert orjson.loads(response.body) == {
        "error": {
            "message": "rpm limit of 1 requests per minute reached for key 'alice'; retry in 60 s",
            "type": "rate_limit_error",
            "param": None,
            "code": "quota_exceeded",
        }
    }


async def test_refused_requests_count_toward_nothing():
    store, key = quotas(), Key(rpm=2, rpd=3, concurrency=5)
    await store.admit(key, MORNING)
    await store.admit(key, MORNING)
    for _ in range(5):
        await refused(store, key, MORNING + 1)

    await store.admit(key, MORNING + 60)
    snapshot = await store.snapshot(key, MORNING + 60)
    assert snapshot["rpd"] is not None and snapshot["rpd"]["used"] == 3
    assert snapshot["concurrency"] is not None and snapshot["concurrency"]["used"] == 3
    assert (await refused(store, key, MORNING + 200)).limit == "rpd"


async def test_rpd_resets_at_midnight_utc():
    store, key = quotas(), Key(rpd=1)
    await store.admit(key, MIDNIGHT - 60)
    error = await refused(store, key, MIDNIGHT - 60)
    assert error.message == (
        "rpd limit of 1 requests per day reached for key 'alice'; retry in 60 s, after 00:00 UTC"
    )
    await store.admit(key, MIDNIGHT)


async def test_tpd_is_checked_at_admission_and_counts_only_added_tokens():
    store, key = quotas(), Key(rpd=10, tpd=100)
    await store.admit(key, MORNING)
    await store.add_tokens(key, 60, MORNING)
    # A cache hit: admitted (rpd counts it) but adds no tokens.
    await store.admit(key, MORNING + 1)
    snapshot = await store.snapshot(key, MORNING + 1)
    assert snapshot["tpd"] == {"limit": 100, "used": 60, "remaining": 40, "resets_at": MIDNIGHT}
    assert snapshot["rpd"] is not None and snapshot["rpd"]["used"] == 2

    await store.admit(key, MORNING + 2)
    await store.add_tokens(key, 45, MORNING + 2)  # an answer may overshoot; the next is refused
    error = await refused(store, key, MORNING + 3)
    assert error.limit == "tpd"
    assert error.retry_after == MIDNIGHT - (MORNING + 3)
    await store.admit(key, MIDNIGHT + 1)


async def test_add_tokens_without_a_time_uses_the_clock():
    now = [MIDNIGHT - 1]
    store, key = MemoryQuotas(clock=lambda: now[0]), Key(tpd=10)
    await store.add_tokens(key, 10)
    await refused(store, key, MIDNIGHT - 1)
    now[0] = MIDNIGHT + 5
    await store.add_tokens(key, 3)
    snapshot = await store.snapshot(key, MIDNIGHT + 5)
    assert snapshot["tpd"] is not None and snapshot["tpd"]["used"] == 3


async def test_concurrency_slot_is_released_once():
    store, key = quotas(), Key(concurrency=2)
    first = await store.admit(key, MORNING)
    await store.admit(key, MORNING)
    error = await refused(store, key, MORNING)
    assert error.message == (
        "concurrency limit of 2 requests at a time reached for key 'alice'; "
        "retry in 1 s, or when one of them ends"
    )
    assert first.lease is not None
    await store.release(key, first.lease)
    await store.release(key, first.lease)  # idempotent: frees one slot, not two
    await store.admit(key, MORNING)
    await refused(store, key, MORNING)


async def test_the_longest_wait_is_the_one_reported():
    store, key = quotas(), Key(rpm=1, rpd=1)
    await store.admit(key, MORNING)
    error = await refused(store, key, MORNING + 1)
    assert error.limit == "rpd"
    assert error.retry_after == MIDNIGHT - (MORNING + 1)


async def test_keys_are_counted_apart():
    store = quotas()
    await store.admit(Key(name="alice", rpm=1), MORNING)
    await store.admit(Key(name="bob", rpm=1), MORNING)
    assert (await refused(store, Key(name="bob", rpm=1), MORNING)).key_name == "bob"


async def test_open_mode_and_unlimited_keys_pass_and_carry_no_headers():
    store = quotas()
    for key in (None, Key()):
        grant = await store.admit(key, MORNING)
        assert isinstance(grant, Grant)
        assert grant.lease is None
        assert ratelimit_headers(await store.snapshot(key, MORNING), MORNING) == {}
        snapshot = await store.snapshot(key, MORNING)
        assert snapshot == {"rpm": None, "rpd": None, "tpd": None, "concurrency": None}


async def test_headers_use_openai_names_and_formats():
    store, key = quotas(), Key(rpm=10, rpd=1000, tpd=5000)
    for offset in (0, 10, 20):
        await store.admit(key, MORNING + offset)
    await store.add_tokens(key, 1200, MORNING + 20)
    assert ratelimit_headers(await store.snapshot(key, MORNING + 20), MORNING + 20) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "1m0s",  # until the newest request leaves the window
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "3800",
        "x-ratelimit-reset-tokens": "15h59m40s",
    }


async def test_request_headers_describe_the_tighter_of_rpm_and_rpd():
    store, key = quotas(), Key(rpm=10, rpd=4)
    for _ in range(3):
        await store.admit(key, MIDNIGHT - 3723)
    headers = ratelimit_headers(await store.snapshot(key, MIDNIGHT - 3723), MIDNIGHT - 3723)
    assert headers == {
        "x-ratelimit-limit-requests": "4",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "1h2m3s",
    }


async def test_when_both_are_spent_the_later_reset_is_shown():
    store, key = quotas(), Key(rpm=2, rpd=2)
    await store.admit(key, MORNING)
    await store.admit(key, MORNING)
    headers = ratelimit_headers(await store.snapshot(key, MORNING), MORNING)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-reset-requests"] == "16h0m0s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.012, "12ms"),
        (1, "1s"),
        (12, "12s"),
        (41.2, "42s"),
        (360, "6m0s"),
        (3599.5, "1h0m0s"),
        (3723, "1h2m3s"),
    ],
)
async def test_reset_duration(seconds, text):
    assert reset_duration(seconds) == text


async def test_snapshot_for_get_v1_usage():
    store, key = quotas(), Key(rpm=5, rpd=100, concurrency=3)
    grant = await store.admit(key, MORNING)
    snapshot = await store.snapshot(key, MORNING + 30)
    assert snapshot == {
        "rpm": {"limit": 5, "used": 1, "remaining": 4, "resets_at": MORNING + 60},
        "rpd": {"limit": 100, "used": 1, "remaining": 99, "resets_at": MIDNIGHT},
        "tpd": None,
        "concurrency": {"limit": 3, "used": 1, "remaining": 2, "resets_at": None},
    }
    assert grant.lease is not None
    await store.release(key, grant.lease)
    later = await store.snapshot(key, MORNING + 61)
    assert later["rpm"] == {"limit": 5, "used": 0, "remaining": 5, "resets_at": None}
    assert usage_fields(later) == {
        "limits": {"rpm": 5, "rpd": 100, "tpd": None, "concurrency": 3},
        "used": {"rpm": 0, "rpd": 1, "tpd": None, "concurrency": 0},
        "remaining": {"rpm": 5, "rpd": 99, "tpd": None, "concurrency": 3},
        "resets_at": {"rpm": None, "rpd": MIDNIGHT, "tpd": None, "concurrency": None},
    }


async def test_snapshot_does_not_count_toward_any_quota():
    store, key = quotas(), Key(rpm=1, rpd=1)
    for _ in range(3):
        await store.snapshot(key, MORNING)
        ratelimit_headers(await store.snapshot(key, MORNING), MORNING)
    await store.admit(key, MORNING)


async def test_fifty_concurrent_admits_against_rpm_10_admit_exactly_10():
    store, key = quotas(), Key(rpm=10, concurrency=100)

    async def one() -> Grant:
        await asyncio.sleep(0)  # interleave on the loop before admitting
        return await store.admit(key, MORNING)

    results = await asyncio.gather(*(one() for _ in range(50)), return_exceptions=True)
    assert sum(isinstance(r, Grant) for r in results) == 10
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 40
    snapshot = await store.snapshot(key, MORNING)
    assert snapshot["concurrency"] is not None and snapshot["concurrency"]["used"] == 10


async def test_seeded_daily_counts_carry_over_a_restart_until_midnight():
    store, key = quotas(), Key(rpd=3, tpd=100)
    await store.seed("alice", requests=2, tokens=40, now=MORNING)
    await store.admit(key, MORNING)
    assert "rpd limit of 3" in (await refused(store, key, MORNING + 1)).message
    used = usage_fields(await store.snapshot(key, MORNING + 1))["used"]
    assert (used["rpd"], used["tpd"]) == (3, 40)
    await store.admit(key, MIDNIGHT)  # a new UTC day starts from zero
