"""The shared scoring definitions the router reads in one call each say what
their single-term readers say, and the router's cached views follow them.

Each formula has one definition (scoring.telemetry_terms,
TelemetryBook.performance_until, QualityTracker.fit_terms,
ArmVersions.changes); the narrower readers (normalize_latency, performance,
blend, blend_upper, observed, changed_since, position) are defined through
them. These tests pin the values each term must have, and that a view
cached by the router is rebuilt when what it read moves: a stale cache in a
router picks the wrong arm without any error.
"""

from __future__ import annotations

import math

import pytest
from factoryd.routing.model import RouteRequest, TaskType, Usage
from factoryd.routing.quality import QualityPolicy, QualityTracker, wilson_upper
from factoryd.routing.scoring import RoutingPolicy, normalize_latency, telemetry_terms
from factoryd.routing.telemetry import BUCKETS_PER_WINDOW, Performance, RunSample, TelemetryBook
from factoryd.routing.versions import LOG_LIMIT, ArmVersions
from routing_kit import T0, arm, engine


def perf(per_second: float = 0.0, seconds: float | None = None, tokens: int = 0) -> Performance:
    return Performance(per_second, seconds, None, tokens, 0.0)


def test_telemetry_terms_normalise_each_term_as_documented() -> None:
    p = RoutingPolicy(throughput_target=2.0, latency_target=10.0, session_token_budget=1000)
    assert telemetry_terms(None, p, 0.5) == (0.5, 0.5, 0.5)  # never reported: the prior
    assert telemetry_terms(None, p, 0.0) == (0.0, 0.0, 0.5)
    assert telemetry_terms(perf(1.0, 5.0, 250), p, 0.0) == (0.5, 0.5, 0.75)
    # Capped at 1.0 / floored at 0.0 beyond the targets and the budget.
    assert telemetry_terms(perf(9.0, 30.0, 5000), p, 0.0) == (1.0, 0.0, 0.0)
    # No successful run in the window: latency is the prior; zero seconds scores 1.0.
    assert telemetry_terms(perf(0.0, None, 0), p, 0.5) == (0.0, 0.5, 1.0)
    assert telemetry_terms(perf(0.0, 0.0, 0), p, 0.0)[1] == 1.0
    # A target or budget of zero: the documented defaults, no division.
    zero = RoutingPolicy(throughput_target=0.0, session_token_budget=0)
    assert telemetry_terms(perf(1.0, 1.0, 10), zero, 0.0)[::2] == (0.0, 0.5)


def test_normalize_latency_reads_the_shared_definition() -> None:
    for seconds in (0.0, 1.25, 2.5, 5.0, 7.5, 100.0):
        p = RoutingPolicy(latency_target=5.0)
        assert normalize_latency(seconds, 5.0) == telemetry_terms(perf(0.0, seconds), p, 0.0)[1]
    assert normalize_latency(2.5, 5.0) == 0.5


def test_performance_until_names_the_next_bucket_edge() -> None:
    book = TelemetryBook(window=600.0)
    width = 600.0 / BUCKETS_PER_WINDOW
    assert book.performance_until("a", T0) == (None, math.inf)  # never reported
    book.touch("a", T0)  # a sign of life, no outcome: no bucket to leave the window
    got, until = book.performance_until("a", T0 + 1)
    assert got is not None and got.throughput == 0.0 and until == math.inf
    book.record("a", RunSample(at=T0 + 3, ok=True, duration=4.0, tokens=10))
    for now in (T0 + 3, T0 + 17.5, T0 + 659):
        got, until = book.performance_until("a", now)
        assert got == book.performance("a", now) and got is not None
        assert len(got) == len(Performance._fields)  # built by tuple.__new__: every field
        assert now < until <= now + width  # the next edge, never a passed one
        assert (until - 600.0) % width == pytest.approx(0.0, abs=1e-6)
    # The outcome leaves the window at an edge the answer named, not between two.
    bucket_start = (T0 + 3) - (T0 + 3) % width
    leaves = bucket_start + 600.0 + width
    before, until = book.performance_until("a", leaves - 0.5)
    assert before is not None and before.session_tokens == 10 and until == leaves
    after = book.performance("a", leaves)
    assert after is not None and after.session_tokens == 0


def test_a_view_is_rebuilt_when_its_outcome_leaves_the_window() -> None:
    e = engine([arm("a")])
    req = RouteRequest(task="t", type=TaskType.DEBUG)
    d = e.route(req, T0)
    e.settle(d, now=T0, usage=Usage(10, 10), ok=True, duration=2.0, task_type="debug")
    seen = e.route(req, T0 + 1).chosen
    assert seen is not None and seen.components.throughput == pytest.approx(1 / 3600)
    width = 3600.0 / BUCKETS_PER_WINDOW
    leaves = T0 - T0 % width + 3600.0 + width
    still = e.route(req, leaves - 0.5).chosen
    assert still is not None and still.components.throughput == seen.components.throughput
    gone = e.route(req, leaves).chosen  # no outcome since: only the clock moved
    assert gone is not None and gone.components.throughput == 0.0
    assert gone.components.consumption == 1.0 and gone.components.latency == 0.5


def test_a_healthy_run_clears_faults_and_is_one_change() -> None:
    book = TelemetryBook()
    book.fault("a", T0)
    book.fault("a", T0)
    book.fault("a", T0)  # the third in a row trips the breaker
    tel = book.arms["a"]
    assert tel.consecutive_faults == 3 and tel.backoff_until is not None
    before = book.versions.of("a")
    book.record("a", RunSample(at=T0 + 1, ok=True, duration=1.0), healthy=True)
    assert book.versions.of("a") == before + 1
    assert tel.consecutive_faults == 0 and tel.backoff_until is None
    book.record("a", RunSample(at=T0 + 2, ok=False, duration=1.0))
    book.fault("a", T0 + 2)
    book.record("a", RunSample(at=T0 + 3, ok=True, duration=1.0))  # not healthy: kept
    assert tel.consecutive_faults == 1
    book.healthy_run("a")
    assert tel.consecutive_faults == 0 and tel.backoff_until is None


@pytest.mark.parametrize("runs", [3, 5, 40])
def test_fit_terms_is_what_blend_and_observed_read(runs: int) -> None:
    policy = QualityPolicy(alpha=0.1, min_observations=3, observed_weight=0.7)
    q = QualityTracker(policy)
    for i in range(runs):
        q.observe("a", "debug", i % 4 != 1)
    observed, fit, upper = q.fit_terms("a", "debug", 0.6)
    ema = q.stats[("a", "debug")].ema
    # Effective runs: n while a plain mean, at most (2 - alpha) / alpha = 19.
    bound = wilson_upper(ema, min(float(runs), 19.0))
    assert observed == ema == q.observed("a", "debug")
    assert fit == pytest.approx(0.7 * ema + 0.3 * 0.6) and fit == q.blend("a", "debug", 0.6)
    assert upper == pytest.approx(0.7 * bound + 0.3 * 0.6)
    assert upper == q.blend_upper("a", "debug", 0.6) and upper >= fit


def test_fit_terms_below_min_observations_is_the_heuristic() -> None:
    q = QualityTracker()
    q.observe("a", "debug", True)
    assert q.fit_terms("a", "debug", 0.4) == (None, 0.4, 0.4)
    assert q.observed("a", "debug") is None and q.blend("a", "review", 0.4) == 0.4


def test_a_view_follows_observed_quality() -> None:
    e = engine([arm("a")])
    req = RouteRequest(task="t", type=TaskType.DEBUG)
    first = e.route(req, T0).chosen
    assert first is not None and first.components.observed is None
    for _ in range(4):
        e.quality.observe("a", "debug", False)
    later = e.route(req, T0 + 1).chosen
    assert later is not None and later.components.observed == 0.0
    assert later.components.task_fit == e.quality.blend("a", "debug", first.components.heuristic)


def test_changes_is_changed_since_and_position_in_one_call() -> None:
    v = ArmVersions()
    assert v.changes(-1) == (None, 0) and v.changes(0) == ([], 0) == (v.changed_since(0), 0)
    v.bump("a")
    v.bump("b")
    assert v.changes(0) == (["a", "b"], 2) and v.changes(1) == (["b"], 2) and v.position == 2
    for _ in range(LOG_LIMIT):
        v.bump("c")
    end = 2 + LOG_LIMIT
    assert v.position == end and v.changes(0) == (None, end)  # forgotten: re-check all
    assert v.changes(end) == ([], end) and v.changed_since(end - 1) == ["c"]
