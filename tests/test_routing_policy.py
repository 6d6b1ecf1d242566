"""The fallback policy table (`app.routing.policy`), case by case: DESIGN §6 and openrouter-api.md
§4.2, §5.4 and Appendix B say which failures move on, what cools, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from app.routing.policy import (
    BACKOFF_MAX,
    BACKOFF_START,
    MAX_COOLDOWN,
    Next,
    Scope,
    Verdict,
    cooldown_until,
    judge,
)
from app.upstream.answers import in_band_rejection, rejection
from tests import fake_openrouter as fake

NOW = 1_790_000_000.5  # mid-day, mid-minute: 2026-09-21 14:13:20.5 UTC
MODEL = "meta-llama/llama-4-scout:free"


def rejected(status: int, message: str, **metadata: Any) -> UpstreamRejected:
    return UpstreamRejected(status, message, metadata=metadata)


def from_fake(failure: fake.HttpError) -> UpstreamRejected:
    """The fake's exact OpenRouter error, parsed as the proxy parses a real one."""
    return rejection(failure.status, orjson.dumps(failure.body), dict(failure.headers), MODEL)


# (error, what the request does next, what cools). One row per line of DESIGN §6.
POLICY = [
    # timeouts and garbled 200s: another model may work; the model is failing, not limited
    pytest.param(UpstreamTimeout("x"), Next.ANY, Scope.FAILING, id="timeout"),
    pytest.param(UpstreamBroken("x"), Next.ANY, Scope.FAILING, id="broken-200"),
    # OpenRouter itself unreachable: every candidate is behind it; nothing is the model's fault
    pytest.param(UpstreamUnreachable("x"), Next.STOP, None, id="unreachable"),
    # 429: provider side and per-model caps cool the model; the free tier cools every `:free`
    pytest.param(from_fake(fake.provider_429(MODEL)), Next.ANY, Scope.MODEL, id="429-provider"),
    pytest.param(
        rejected(429, "Provider returned error", raw="Too Many Requests", provider_name="H"),
        Next.ANY,
        Scope.MODEL,
        id="429-provider-old-form",
    ),
    pytest.param(
        from_fake(fake.per_model_daily(MODEL, 1_790_035_200_000)),
        Next.ANY,
        Scope.MODEL,
        id="429-limit_rpd-per-model",
    ),
    pytest.param(
        rejected(
            429,
            "Rate limit exceeded: limit_rpm/qwen/abc. High demand for qwen/qwen3-coder:free on "
            "OpenRouter - limited to 8 requests per minute. Please retry shortly.",
        ),
        Next.ANY,
        Scope.MODEL,
        id="429-limit_rpm-high-demand",
    ),
    pytest.param(
        from_fake(fake.free_per_day(1_790_035_200_000)),
        Next.ANY,
        Scope.FREE_TIER,
        id="429-free-models-per-day",
    ),
    pytest.param(
        from_fake(fake.free_per_day(1_790_035_200_000, limit=1000)),
        Next.ANY,
        Scope.FREE_TIER,
        id="429-free-models-per-day-high-balance",
    ),
    pytest.param(
        rejected(429, "Rate limit exceeded", limit_source="openrouter_free_tier_daily"),
        Next.ANY,
        Scope.FREE_TIER,
        id="429-limit_source-daily",
    ),
    pytest.param(
        from_fake(fake.free_per_min(1_790_000_040_000)),
        Next.ANY,
        Scope.FREE_TIER,
        id="429-free-models-per-min",
    ),
    pytest.param(
        rejected(429, "Rate limit exceeded", limit_source="openrouter_free_tier_minute"),
        Next.ANY,
        Scope.FREE_TIER,
        id="429-limit_source-minute",
    ),
    pytest.param(  # the variant spelling seen once (openrouter-api.md §4.3)
        rejected(429, "Rate limit exceeded", limit_source="free_tier_per_minute"),
        Next.ANY,
        Scope.FREE_TIER,
        id="429-limit_source-minute-variant",
    ),
    # timeouts, overload, model down: a server failure is not a rate limit, even with a
    # Retry-After (503): the model is only tried after the others
    pytest.param(from_fake(fake.timeout_408()), Next.ANY, Scope.FAILING, id="408"),
    pytest.param(rejected(500, "Internal Server Error"), Next.ANY, Scope.FAILING, id="500"),
    pytest.param(from_fake(fake.provider_502()), Next.ANY, Scope.FAILING, id="502"),
    pytest.param(from_fake(fake.unavailable_503(5)), Next.ANY, Scope.FAILING, id="503"),
    pytest.param(from_fake(fake.edge_524()), Next.ANY, Scope.FAILING, id="524"),
    pytest.param(from_fake(fake.overloaded_529()), Next.ANY, Scope.FAILING, id="529"),
    # model-specific 404 and 400
    pytest.param(
        from_fake(fake.no_endpoints(MODEL)), Next.ANY, Scope.FAILING, id="404-no-endpoints"
    ),
    pytest.param(
        rejected(404, 'No endpoints found that support tool use. Try disabling "weather".'),
        Next.ANY,
        None,  # the request, not the model, is what no endpoint supports
        id="404-no-endpoints-for-this-request",
    ),
    pytest.param(
        from_fake(fake.invalid_model("acme/fake-1.0")),
        Next.ANY,
        None,  # not cooled: asked for again, it gets OpenRouter's 400 back, not a 429
        id="400-not-a-valid-model-id",
    ),
    # credits: only a zero-priced model can help
    pytest.param(from_fake(fake.credits_402()), Next.FREE_ONLY, None, id="402-credits"),
    # the same input fails everywhere: relay
    pytest.param(
        from_fake(fake.bad_request_400("'messages' must not be empty")),
        Next.RELAY,
        None,
        id="400-bad-request",
    ),
    # too long for this model: only a model with a longer context may help; no cooldown
    pytest.param(
        rejected(400, "This endpoint's maximum context length is 8192 tokens."),
        Next.LARGER_CONTEXT,
        None,
        id="400-context-length",
    ),
    pytest.param(
        UpstreamRejected(400, "Input too long", metadata={"error_type": "context_length_exceeded"}),
        Next.LARGER_CONTEXT,
        None,
        id="400-context_length_exceeded",
    ),
    pytest.param(rejected(401, "User not found."), Next.RELAY, None, id="401"),
    pytest.param(from_fake(fake.moderation_403(MODEL)), Next.RELAY, None, id="403-moderation"),
    pytest.param(rejected(403, "Key limit exceeded (daily limit)"), Next.RELAY, None, id="403-key"),
    pytest.param(rejected(413, "Payload Too Large"), Next.RELAY, None, id="413"),
    pytest.param(rejected(422, "Unprocessable Entity"), Next.RELAY, None, id="422"),
    # errors inside a 200 are judged by their `error.code` (openrouter-api.md §4.2, last row)
    pytest.param(
        in_band_rejection({"error": {"code": 502, "message": "Provider returned error"}}, MODEL),
        Next.ANY,
        Scope.FAILING,
        id="in-band-502",
    ),
    pytest.param(
        in_band_rejection(
            {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-day"}}, MODEL
        ),
        Next.ANY,
        Scope.FREE_TIER,
        id="in-band-free-models-per-day",
    ),
    pytest.param(
        in_band_rejection({"error": {"code": 400, "message": "Invalid tool schema"}}, MODEL),
        Next.RELAY,
        None,
        id="in-band-400",
    ),
]


@pytest.mark.parametrize(("error", "next_step", "scope"), POLICY)
def test_judge_follows_the_policy_table(error: UpstreamError, next_step: Next, scope: Scope | None):
    verdict = judge(error, NOW)
    assert (verdict.next, verdict.scope) == (next_step, scope)


# --- how long a model (or the free tier) cools -------------------------------------------------


def until(error: UpstreamError, failures: int = 1) -> float:
    return cooldown_until(judge(error, NOW), NOW, failures)


def test_x_ratelimit_reset_is_epoch_milliseconds():
    error = from_fake(fake.free_per_min(1_790_000_040_000))
    assert until(error) == 1_790_000_040.0


def test_rate_limit_reset_echoed_only_in_the_body_is_honoured():
    """In-band errors carry the headers inside `metadata.headers` (openrouter-api.md §4.3)."""
    failure = fake.free_per_day(1_790_035_200_000)
    error = rejection(429, orjson.dumps(failure.body), {}, MODEL)  # no real headers
    assert until(error) == 1_790_035_200.0


def test_retry_after_is_seconds_from_now():
    error = UpstreamRejected(429, "Provider returned error", upstream_headers={"Retry-After": "7"})
    assert until(error) == NOW + 7


def test_header_names_are_case_insensitive():
    error = UpstreamRejected(429, "busy", upstream_headers={"RETRY-AFTER": "12"})
    assert until(error) == NOW + 12


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5, 6, 10, 50])
def test_without_a_hint_backoff_doubles_and_is_capped(failures: int):
    expected = min(BACKOFF_START * 2 ** (failures - 1), BACKOFF_MAX)
    assert until(from_fake(fake.provider_429(MODEL)), failures) == NOW + expected


def test_backoff_starts_short_and_grows_to_the_cap():
    waits = [until(from_fake(fake.provider_429(MODEL)), n) - NOW for n in range(1, 12)]
    assert 0 < waits[0] <= 60
    assert all(b == min(2 * a, BACKOFF_MAX) for a, b in zip(waits, waits[1:], strict=False))
    assert waits[-1] == BACKOFF_MAX


@pytest.mark.parametrize(
    "headers",
    [{"X-RateLimit-Reset": "soon"}, {"Retry-After": "later"}, {"X-RateLimit-Reset": "1000"}],
    ids=["garbled-reset", "garbled-retry-after", "reset-in-the-past"],
)
def test_unusable_hints_fall_back_to_backoff(headers: dict[str, str]):
    error = UpstreamRejected(429, "Provider returned error", upstream_headers=headers)
    assert until(error) == NOW + BACKOFF_START


def test_no_hint_is_trusted_beyond_a_day():
    a_year_on_ms = int((NOW + 365 * 86_400) * 1000)
    assert until(from_fake(fake.per_model_daily(MODEL, a_year_on_ms))) == NOW + MAX_COOLDOWN


def test_free_models_per_day_without_header_cools_until_next_midnight_utc():
    error = rejected(429, "Rate limit exceeded: free-models-per-day. ")
    back = datetime.fromtimestamp(until(error), UTC)
    assert (back.hour, back.minute, back.second, back.microsecond) == (0, 0, 0, 0)
    assert back.date() == datetime.fromtimestamp(NOW, UTC).date() + timedelta(days=1)


def test_free_models_per_min_without_header_cools_until_the_next_minute():
    error = rejected(429, "Rate limit exceeded: free-models-per-min. ")
    assert until(error) == 1_790_000_040.0  # NOW is 14:13:20.5; the window turns at 14:14:00


def test_a_verdict_without_a_reset_uses_backoff_even_for_the_free_tier():
    verdict = Verdict(Next.ANY, Scope.FREE_TIER, None)
    assert cooldown_until(verdict, NOW, 1) == NOW + BACKOFF_START
