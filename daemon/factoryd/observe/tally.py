"""A labelled counter whose series are numbers in a dict, for counts made per run.

prometheus_client's `Counter.labels()` makes a child object for each new
label set (its name and labels checked, a lock and a value object made),
and a run's first count under a task's name is such a new set: a burst of
first runs spent a twentieth of the loop making them. A `Tally` is a
custom collector, prometheus_client's documented way to expose numbers the
program keeps itself: counting is one dict update, the family is built at
scrape time. What is scraped is what the Counter exposed (a test compares
the two expositions); the renderer reads `counts` directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry


class Tally:
    """Counter `name` (exposed as `name_total`) with `labelnames`, kept as
    label values → count. Added to and scraped on the loop; a scrape from
    another thread would still read a whole copy (`dict.copy` takes no step
    the loop can interleave with)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.counts: dict[tuple[str, ...], float] = {}
        if registry is not None:
            registry.register(self)

    def add(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Count `amount` (>= 0, as for any counter) under `labels`, whose
        values are in the order of `labelnames`."""
        if amount < 0:
            raise ValueError("a counter only goes up: amount must be >= 0")
        counts = self.counts
        counts[labels] = counts.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        """The count under `labels` (0 when never counted)."""
        return self.counts.get(labels, 0.0)

    def describe(self) -> list[Metric]:
        """The family without samples: what the registry checks names against."""
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, count in self.counts.copy().items():
            family.add_metric(labels, count)
        yield family
