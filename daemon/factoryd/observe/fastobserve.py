"""`Histogram.observe` without prometheus_client's per-call work, for the hot path.

The loop observes a histogram at every run start, run end and pass; the
library's `observe` checks its argument and walks every bucket under a lock
per call. This adds to the same value objects the exposition reads, so what
is scraped is unchanged (tests/test_metrics_fast_observe.py compares the
exposition with the library's own path, byte for byte, since it rests on
the library's internals; constraints.txt pins the version).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Histogram


class FastObserve:
    """`Histogram.observe` for a histogram without labels (or one labelled child),
    as prometheus_client does it, minus its per-call checks and its walk over
    the buckets: the bucket found by bisection, then the same two locked adds
    on the same values (what the exposition reads). Observed on every run
    start, run end and pass."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, histogram: Histogram) -> None:
        self._sum: Any = histogram._sum
        self._buckets: list[Any] = histogram._buckets
        self._bounds: list[float] = histogram._upper_bounds

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        i = bisect_left(self._bounds, amount)
        if i < len(self._bounds) and amount <= self._bounds[i]:  # NaN: no bucket, as upstream
            self._buckets[i].inc(1)
