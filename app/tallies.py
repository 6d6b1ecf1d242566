"""Counters and histograms kept as plain numbers, turned into Prometheus families only
when `/metrics` is scraped.

prometheus_client's own `Counter` and `Histogram` take a lock for every increment and walk
the buckets in Python on every observation: on a cache hit, the request counter and two
histograms were a tenth of the proxy's own CPU (bench/README.md, "Profile"). Every count
here is made on the event loop's thread, and the scrape renders with no await in between,
so plain dicts and lists need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported at the first scrape (`app/metrics.py`, `Metrics.registry`)
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily


class Tally:
    """A labelled counter: label values -> count."""

    __slots__ = ("name", "documentation", "labels", "counts")

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.counts: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], n: float = 1) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + n

    def family(self) -> CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.counts.items():
            family.add_metric(list(labels), value)
        return family


class Buckets:
    """One label set's observations: how many fell at or under each bound, and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # `le`: at or under the bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        from prometheus_client.utils import floatToGoString

        shown: list[tuple[str, float]] = []
        total = 0
        names = [*map(floatToGoString, self.bounds), "+Inf"]
        for name, count in zip(names, self.counts, strict=True):
            total += count
            shown.append((name, total))
        return shown


class Spread:
    """A labelled histogram: label values -> `Buckets`."""

    __slots__ = ("name", "documentation", "labels", "bounds", "children")

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = tuple(bounds)
        self.children: dict[tuple[str, ...], Buckets] = {}

    def child(self, labels: tuple[str, ...]) -> Buckets:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = Buckets(self.bounds)
        return child

    def family(self) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, child in self.children.items():
            family.add_metric(list(labels), child.cumulative(), child.sum)
        return family


def families(
    tallies: Sequence[Tally | Spread],
) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    for tally in tallies:
        yield tally.family()
