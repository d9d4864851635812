"""FastObserve adds to prometheus_client's own histogram values, bypassing its
`observe`: it rests on the library's internals (pinned in constraints.txt), so
this test puts both paths side by side on the same samples and requires the
same exposition, byte for byte. An upgrade that moves those internals fails
here, not in a dashboard."""

from __future__ import annotations

import math

from factoryd.observe.fastobserve import FastObserve
from prometheus_client import CollectorRegistry, Histogram, generate_latest

SAMPLES = [0.0, 1e-6, 0.005, 0.0051, 0.1, 0.25, 1.0, 2.5, 7.0, 1e9, -1.0, math.inf, math.nan]


def _exposition(fast: bool, labelled: bool) -> bytes:
    registry = CollectorRegistry()
    hist = Histogram(
        "h_seconds",
        "help",
        ["task"] if labelled else [],
        buckets=(0.005, 0.1, 0.25, 1.0, 2.5),
        registry=registry,
    )
    target = hist.labels("t") if labelled else hist
    observe = FastObserve(target).observe if fast else target.observe
    for amount in SAMPLES:
        observe(amount)
    # the series' creation instants differ by construction; the rest must not
    lines = generate_latest(registry).splitlines(keepends=True)
    return b"".join(line for line in lines if b"_created" not in line)


def test_fast_observe_writes_what_the_library_writes() -> None:
    for labelled in (False, True):
        assert _exposition(True, labelled) == _exposition(False, labelled)


def test_a_request_keeps_a_bounded_number_of_attempt_variants() -> None:
    """A long-lived task's budget counts down run by run; the request must not keep
    one variant object per count it ever saw (the memory benchmark's growth)."""
    from factoryd.routing.model import VARIANTS_KEPT, RouteRequest, TaskType

    req = RouteRequest(task="t", type=TaskType.DEBUG)
    for left in range(10_000):
        assert req.with_attempts_left(left).attempts_left == left
    assert len(req._variants) <= VARIANTS_KEPT
    assert req.with_attempts_left(3) is req.with_attempts_left(3)
