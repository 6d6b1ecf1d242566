"""Prometheus metrics (DESIGN §11): what a team running the proxy needs to see, with no
secret, prompt or answer in any label.

Each app owns its `Metrics` and its own `CollectorRegistry` (never the process-wide
default), so several apps in one test process never collide. The request path only
increments pre-bound children: label tuples are bounded (routes, statuses, catalogue
models, cache results, outcomes), so each child is built once and kept in a dict. Model ids
outside the catalogue fold into `other`: a client naming random ids cannot grow the
registry. Before the catalogue is first loaded (the hot path never waits for it), counts
wait in a small bounded map and take their labels at the next scrape, which loads it; a
scraper therefore sees the same numbers as if the labels had been known at once. An id
longer than any catalogue id is `other` at once: the map never holds a client's long id.
Gauges over state owned elsewhere (cooling models, the free budget, the cache, the usage
queue) are read at scrape time by `scrape`, never kept in step on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from app.tallies import Buckets, Spread, Tally, families

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

PREFIX: Final = "openrouter_proxy_"
OTHER: Final = "other"  # a model id the catalogue does not list
NONE: Final = "none"  # no model answered (an error, a refusal)
Outcome = Literal[
    "ok", "rate_limited_provider", "rate_limited_account", "error", "timeout", "unreachable"
]
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Distinct label sets counted before the catalogue is known; beyond it, `other` at once.
MAX_PENDING = 256
# OpenRouter's ids (`vendor/name:variant`) stay far below it.
MAX_MODEL_ID_CHARS = 256

# Seconds. Latency spans a cache hit (< 1 ms) to a slow reasoning answer (minutes).
LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The proxy's own cost is meant to stay near a millisecond (DESIGN §9).
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5)


@dataclass(slots=True)
class Scraped:
    """Values read at scrape time from the stores that own them."""

    cooling: int = 0
    failing: int = 0
    free_left: int | None = None
    free_limit: int | None = None
    catalogue_models: int = 0
    redis_up: int | None = None  # only when PROXY_REDIS_URL is set
    cache: tuple[int, int, int, int] = (0, 0, 0, 0)  # entries, bytes, hits, misses
    usage_queue: int = 0
    usage_dropped: int = 0


class Metrics:
    def __init__(self, known_models: Callable[[], Mapping[str, Any] | None] = lambda: None) -> None:
        """`known_models` returns the catalogue as last loaded (None before): its ids are
        the model labels; anything else is `other`."""
        # Built at the first scrape (`registry`): prometheus_client is imported only then.
        self._registry: CollectorRegistry | None = None
        self._known = known_models
        # The per-request counts: plain numbers, rendered at scrape time (app/tallies.py).
        self._requests = Tally(
            f"{PREFIX}requests",
            "Requests answered, by route, status, the model that answered and cache result.",
            ("route", "status", "model", "cache"),
        )
        self._attempts = Tally(
            f"{PREFIX}upstream_attempts",
            "Upstream attempts by model and outcome.",
            ("model", "outcome"),
        )
        self._latency = Spread(
            f"{PREFIX}request_duration_seconds",
            "Time from the request's arrival to its end (a stream's last byte).",
            ("route",),
            LATENCY_BUCKETS,
        )
        self._ttft = Spread(
            f"{PREFIX}time_to_first_token_seconds",
            "Streams: time from arrival to the first content sent to the client.",
            ("route",),
            LATENCY_BUCKETS,
        )
        self._overhead = Spread(
            f"{PREFIX}proxy_overhead_seconds",
            "Time in the proxy before the first byte to the client, minus the answering "
            "upstream attempt (Server-Timing proxy;dur).",
            ("route",),
            OVERHEAD_BUCKETS,
        )
        self._quota = Tally(
            f"{PREFIX}quota_rejections",
            "Requests refused by a key's own quota, by key name and limit.",
            ("key", "limit"),
        )
        self._scraped = Scraped()
        # raw labels -> the label values shown (the status as text, the cache lower-case)
        self._request_labels: dict[tuple[str, int, str, str], tuple[str, str, str, str]] = {}
        # (route, status, raw model, cache) or (raw model, outcome) -> count, unlabelled yet
        self._pending_requests: dict[tuple[str, int, str, str], int] = {}
        self._pending_attempts: dict[tuple[str, str], int] = {}
        self._route_children: dict[str, tuple[Buckets, Buckets, Buckets]] = {}

    def __len__(self) -> int:
        """Label sets held, counted or waiting for their labels (a bound tests can check)."""
        counted = len(self._requests.counts) + len(self._attempts.counts)
        return counted + len(self._pending_requests) + len(self._pending_attempts)

    def model_label(self, model: str | None) -> str:
        if model is None:
            return NONE
        known = self._known()
        return model if known is not None and model in known else OTHER

    def _count_request(self, route: str, status: int, model: str, cache: str, n: int) -> None:
        raw = (route, status, model, cache)
        labels = self._request_labels.get(raw)
        if labels is None:
            labels = self._request_labels[raw] = (route, str(status), model, cache.lower())
        self._requests.inc(labels, n)

    def _count_attempt(self, model: str, outcome: str, n: int) -> None:
        self._attempts.inc((model, outcome), n)

    def _settle(self) -> None:
        """Label the counts kept while the catalogue was unknown (it is known now)."""
        pending_requests, self._pending_requests = self._pending_requests, {}
        for (route, status, model, cache), n in pending_requests.items():
            self._count_request(route, status, self.model_label(model), cache, n)
        pending_attempts, self._pending_attempts = self._pending_attempts, {}
        for (model, outcome), n in pending_attempts.items():
            self._count_attempt(self.model_label(model), outcome, n)

    def request(
        self,
        route: str,
        status: int,
        served: str | None,
        cache: str,
        latency_ms: float,
        ttft_ms: float | None,
        overhead_ms: float | None,
    ) -> None:
        """One finished request (called once, from `Trace.finish`)."""
        if served is not None and self._known() is None and len(served) <= MAX_MODEL_ID_CHARS:
            pending = (route, status, served, cache)
            if pending in self._pending_requests or len(self._pending_requests) < MAX_PENDING:
                self._pending_requests[pending] = self._pending_requests.get(pending, 0) + 1
            else:
                self._count_request(route, status, OTHER, cache, 1)
        else:
            self._count_request(route, status, self.model_label(served), cache, 1)
        timings = self._route_children.get(route)
        if timings is None:
            labels = (route,)
            timings = (
                self._latency.child(labels),
                self._ttft.child(labels),
                self._overhead.child(labels),
            )
            self._route_children[route] = timings
        timings[0].observe(latency_ms / 1000)
        if ttft_ms is not None:
            timings[1].observe(ttft_ms / 1000)
        if overhead_ms is not None:
            timings[2].observe(max(overhead_ms, 0.0) / 1000)

    def attempt(self, model: str, outcome: Outcome) -> None:
        """One upstream attempt and how it ended (the `AttemptRecorder` of routing)."""
        if self._known() is None and len(model) <= MAX_MODEL_ID_CHARS:
            pending = (model, outcome)
            if pending in self._pending_attempts or len(self._pending_attempts) < MAX_PENDING:
                self._pending_attempts[pending] = self._pending_attempts.get(pending, 0) + 1
                return
            model = OTHER
        self._count_attempt(self.model_label(model), outcome, 1)

    def quota_rejected(self, key_name: str, limit: str) -> None:
        self._quota.inc((key_name, limit))

    @property
    def waiting(self) -> bool:
        """Counts wait for the catalogue to label their models."""
        return bool(self._pending_requests or self._pending_attempts)

    def settled(self) -> Mapping[str, Any] | None:
        """The catalogue as last loaded, the waiting counts labelled by it once it is."""
        known = self._known()
        if known is not None:
            self._settle()
        return known

    def render(self, scraped: Scraped) -> bytes:
        """The Prometheus text, with the stores' state as `scraped` read it just now."""
        from prometheus_client import generate_latest

        self._scraped = scraped
        return generate_latest(self.registry)

    @property
    def registry(self) -> CollectorRegistry:
        """This app's own registry, built at the first scrape: prometheus_client costs
        ~1 MiB that a serving process never scraped does not hold (bench/README.md,
        "Memory per open stream")."""
        if self._registry is None:
            self._registry = _registry(self)
        return self._registry


def _registry(metrics: Metrics) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    class ScrapedCollector(Collector):
        """Renders the values the last scrape read (`Metrics.render`)."""

        def describe(self) -> Iterator[Metric]:
            return iter(())  # unchecked: its names are fixed and distinct from the others'

        def collect(self) -> Iterator[Metric]:
            return _collect(metrics)

    registry = CollectorRegistry(auto_describe=True)
    registry.register(ScrapedCollector())
    return registry


def _collect(metrics: Metrics) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily

    counted = (metrics._requests, metrics._attempts, metrics._quota)
    yield from families((*counted, metrics._latency, metrics._ttft, metrics._overhead))
    s = metrics._scraped
    yield _gauge("models_cooling", "Catalogue models rate-limited now (skipped).", s.cooling)
    yield _gauge("models_failing", "Catalogue models failing now (tried after others).", s.failing)
    yield _gauge("catalogue_models", "Models in the upstream catalogue.", s.catalogue_models)
    if s.free_left is not None:
        yield _gauge(
            "free_requests_left_today",
            "Requests to free models the account has left today (UTC).",
            s.free_left,
        )
    if s.free_limit is not None:
        yield _gauge(
            "free_requests_limit_today",
            "The account's daily allowance of requests to free models.",
            s.free_limit,
        )
    entries, size, hits, misses = s.cache
    yield _gauge("cache_entries", "Answers held in the response cache.", entries)
    yield _gauge("cache_bytes", "Measured bytes held by the response cache.", size)
    hit_family = CounterMetricFamily(
        f"{PREFIX}cache_hits", "Requests answered from the cache (or a request in flight)."
    )
    hit_family.add_metric([], hits)
    yield hit_family
    miss_family = CounterMetricFamily(f"{PREFIX}cache_misses", "Cache lookups that found nothing.")
    miss_family.add_metric([], misses)
    yield miss_family
    yield _gauge("usage_queue_depth", "Usage records waiting to be written.", s.usage_queue)
    dropped = CounterMetricFamily(
        f"{PREFIX}usage_dropped",
        "Usage records lost: past the queue bound while the database could not be written, "
        "or still unwritten at shutdown.",
    )
    dropped.add_metric([], s.usage_dropped)
    yield dropped
    if s.redis_up is not None:
        yield _gauge("redis_up", "1 while Redis answers, 0 while it is unreachable.", s.redis_up)


def _gauge(name: str, documentation: str, value: float) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}{name}", documentation, value=value)
