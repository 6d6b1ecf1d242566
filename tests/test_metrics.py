"""GET /metrics and Server-Timing (DESIGN §11), end to end: the real proxy in front of the
fake OpenRouter; each test reads the Prometheus text a scraper would see."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.metrics import Metrics, Scraped
from tests.conftest import ProxyFactory, make_settings
from tests.fake_openrouter import (
    MISTRAL,
    QWEN,
    SCOUT,
    FakeOpenRouter,
    Reply,
    free_per_min,
    provider_429,
    provider_502,
)
from tests.live_server import LiveServer

GPT = "openai/gpt-4o-mini"
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello"}]
ADMIN = "sk-admin-for-metrics-tests-0001"
TIMING = re.compile(r"^proxy;dur=(\d+(?:\.\d+)?)(?:, upstream;dur=(\d+(?:\.\d+)?))?$")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(proxy: LiveServer, admin: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {admin}"} if admin else {}
    response = httpx.get(f"{proxy.url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("openrouter_proxy_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"openrouter_proxy_{name}", frozenset(labels.items())), 0.0)


def requests(samples: Samples, **labels: str) -> float:
    labels.setdefault("route", CHAT)
    return value(samples, "requests_total", **labels)


def attempts(samples: Samples, model: str, outcome: str) -> float:
    return value(samples, "upstream_attempts_total", model=model, outcome=outcome)


def post(proxy: LiveServer, key: str | None = None, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{proxy.url}{CHAT}", json={"messages": HELLO, **body}, headers=headers, timeout=20
    )


def server_timing(response: httpx.Response) -> tuple[float, float | None]:
    """(proxy, upstream) milliseconds; the header must be there once and parse."""
    values = response.headers.get_list("server-timing")
    assert len(values) == 1, values
    match = TIMING.match(values[0])
    assert match, values[0]
    upstream = match.group(2)
    return float(match.group(1)), None if upstream is None else float(upstream)


def test_a_success_counts_the_request_the_attempt_and_the_free_allowance(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy() as proxy:
        before = scrape(proxy)
        response = post(proxy, model=SCOUT)
        assert response.status_code == 200
        after = scrape(proxy)
    assert requests(after, status="200", model=SCOUT, cache="bypass") == 1
    assert attempts(after, SCOUT, "ok") == 1
    route = {"route": CHAT}
    assert value(after, "request_duration_seconds_count", **route) == 1
    assert value(after, "proxy_overhead_seconds_count", **route) == 1
    assert value(after, "time_to_first_token_seconds_count", **route) == 0  # not a stream
    left = value(before, "free_requests_left_today")
    assert left > 0 and value(after, "free_requests_left_today") == left - 1
    assert value(after, "free_requests_limit_today") >= left
    assert value(after, "catalogue_models") > 0
    assert value(after, "models_cooling") == 0
    assert ("openrouter_proxy_usage_queue_depth", frozenset()) in after


def test_a_fallback_counts_each_attempt_by_outcome_and_the_model_cooling(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(QWEN, provider_502())
    with start_proxy(chains={"trio": [SCOUT, QWEN, MISTRAL]}, max_wait=0) as proxy:
        response = post(proxy, model="trio")
        assert response.status_code == 200 and response.headers["x-proxy-model"] == MISTRAL
        after = scrape(proxy)
    assert attempts(after, SCOUT, "rate_limited_provider") == 1
    assert attempts(after, QWEN, "error") == 1
    assert attempts(after, MISTRAL, "ok") == 1
    assert requests(after, status="200", model=MISTRAL, cache="bypass") == 1
    assert value(after, "models_cooling") == 1  # SCOUT, until its backoff ends
    assert value(after, "models_failing") == 1  # QWEN, tried after the others for a while


def test_an_account_wide_429_is_rate_limited_account_and_cools_every_free_model(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    reset_ms = int((time.time() + 600) * 1000)
    fake.script(SCOUT, free_per_min(reset_ms))
    with start_proxy(chains={"mixed": [SCOUT, GPT]}, max_wait=0) as proxy:
        response = post(proxy, model="mixed")
        assert response.status_code == 200 and response.headers["x-proxy-model"] == GPT
        after = scrape(proxy)
    assert attempts(after, SCOUT, "rate_limited_account") == 1
    assert attempts(after, GPT, "ok") == 1
    free_ids = [m["id"] for m in fake.models if m["id"].endswith(":free")]
    assert value(after, "models_cooling") == len(free_ids) > 1


def test_a_quota_rejection_is_counted_by_key_name_behind_the_admin_key(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy(admin_key=ADMIN) as proxy:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        created = httpx.post(
            f"{proxy.url}/admin/keys", json={"name": "alice", "rpm": 1}, headers=admin
        )
        secret = created.json()["key"]
        assert post(proxy, key=secret, model=SCOUT).status_code == 200  # free-only key
        refused = post(proxy, key=secret, model=SCOUT)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exceeded"
        server_timing(refused)  # errors carry it too
        # Key mode: /metrics names keys, so it wants the admin key.
        assert httpx.get(f"{proxy.url}/metrics").status_code == 401
        wrong = httpx.get(f"{proxy.url}/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert wrong.status_code == 401
        after = scrape(proxy, admin=ADMIN)
    assert value(after, "quota_rejections_total", key="alice", limit="rpm") == 1
    assert requests(after, status="429", model="none", cache="bypass") == 1
    assert attempts(after, SCOUT, "ok") == 1  # the refused request never went up


def test_metrics_in_key_mode_without_any_admin_key_is_401_saying_what_to_set(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy() as proxy:
        services = proxy.app.state.services
        services.team.keys.create("bob")
        services.team.keyring.refresh()
        response = httpx.get(f"{proxy.url}/metrics")
    assert response.status_code == 401
    assert "PROXY_ADMIN_KEY" in response.json()["error"]["message"]


def test_a_cache_hit_is_counted_and_answered_without_an_attempt(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy(cache="deterministic") as proxy:
        first = post(proxy, model=GPT, temperature=0)
        second = post(proxy, model=GPT, temperature=0)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        after = scrape(proxy)
    assert requests(after, status="200", model=GPT, cache="miss") == 1
    assert requests(after, status="200", model=GPT, cache="hit") == 1
    assert attempts(after, GPT, "ok") == 1
    assert value(after, "cache_hits_total") == 1
    assert value(after, "cache_entries") == 1
    assert value(after, "cache_bytes") >= len(first.content)
    proxy_ms, upstream_ms = server_timing(second)
    assert upstream_ms is None and proxy_ms >= 0  # a hit never went upstream


def test_model_ids_outside_the_catalogue_fold_into_other(start_proxy: ProxyFactory) -> None:
    with start_proxy(max_wait=0) as proxy:
        for n in range(3):
            assert post(proxy, model=f"acme/made-up-{n}").status_code == 400
        after = scrape(proxy)
    assert attempts(after, "other", "error") == 3
    assert requests(after, status="400", model="none", cache="bypass") == 3
    assert not any("made-up" in str(labels) for _, labels in after)


@pytest.mark.parametrize("stream", [False, True])
def test_server_timing_parses_and_names_the_answering_attempt(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, stream: bool
) -> None:
    """The upstream part covers the attempt (a slow first byte here), not the proxy's."""
    fake.script(GPT, Reply(first_byte_delay=0.3))
    with start_proxy() as proxy:
        body = {"model": GPT, "messages": HELLO, "stream": stream}
        with httpx.stream("POST", f"{proxy.url}{CHAT}", json=body, timeout=20) as response:
            assert response.status_code == 200
            proxy_ms, upstream_ms = server_timing(response)
            response.read()
        samples = scrape(proxy)
    assert upstream_ms is not None and upstream_ms >= 300
    assert 0 <= proxy_ms
    ttft = value(samples, "time_to_first_token_seconds_count", route=CHAT)
    assert ttft == (1 if stream else 0)


def test_each_app_has_its_own_registry() -> None:
    """Two apps in one process: no duplicate-series error, and neither sees the other's."""
    first, second = (create_app(make_settings()) for _ in range(2))
    metrics: list[Metrics] = [app.state.services.metrics for app in (first, second)]
    metrics[0].attempt("acme/x", "ok")
    assert metrics[0].registry is not metrics[1].registry
    count = metrics[1].registry.get_sample_value(
        "openrouter_proxy_upstream_attempts_total", {"model": "other", "outcome": "ok"}
    )
    assert count is None


def test_counts_before_the_catalogue_loads_are_bounded_and_labelled_later() -> None:
    """A flood of made-up ids before the first catalogue fetch cannot grow the registry."""
    catalogue: dict[str, Any] | None = None
    metrics = Metrics(lambda: catalogue)
    metrics.attempt(GPT, "ok")  # a real model, counted before the map filled up
    for n in range(3000):
        metrics.attempt(f"acme/flood-{n}", "error")
    catalogue = {GPT: object()}
    metrics._settle()
    sample = metrics.registry.get_sample_value
    assert (
        sample("openrouter_proxy_upstream_attempts_total", {"model": "other", "outcome": "error"})
        == 3000
    )
    assert sample("openrouter_proxy_upstream_attempts_total", {"model": GPT, "outcome": "ok"}) == 1
    series = [s for f in metrics.registry.collect() for s in f.samples if "flood" in str(s.labels)]
    assert series == []


def test_latency_buckets_count_a_value_at_its_bound_and_are_cumulative() -> None:
    """The histograms are kept as plain counts (app/tallies.py): a scraper must still read
    Prometheus' `le` semantics (at or under the bound), cumulative buckets, sum and count."""
    metrics = Metrics(dict)
    for seconds in (0.005, 0.02, 0.3, 500.0):  # on the first bound, inside, inside, past all
        metrics.request(CHAT, 200, None, "BYPASS", seconds * 1000, None, None)
    text = metrics.render(Scraped())
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    name = "openrouter_proxy_request_duration_seconds"

    def bucket(le: str) -> float:
        return samples[(f"{name}_bucket", frozenset({("route", CHAT), ("le", le)}))]

    assert bucket("0.005") == 1
    assert bucket("0.025") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("300.0") == 3
    assert bucket("+Inf") == 4
    assert samples[(f"{name}_count", frozenset({("route", CHAT)}))] == 4
    assert samples[(f"{name}_sum", frozenset({("route", CHAT)}))] == pytest.approx(500.325)
    requests = ("openrouter_proxy_requests_total", frozenset(
        {("route", CHAT), ("status", "200"), ("model", "none"), ("cache", "bypass")}
    ))  # fmt: skip
    assert samples[requests] == 4
