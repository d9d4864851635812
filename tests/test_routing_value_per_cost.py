"""The `value_per_cost` strategy: value over effective cost, the quality floor,
feasibility and scarcity (the rules seed B routed by)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from factoryd.routing.ledger import PoolLedger, ScarcityPolicy
from factoryd.routing.model import (
    MIN_QUALITY,
    ArmSpec,
    Priority,
    RejectReason,
    RouteRequest,
    TaskType,
)
from factoryd.routing.quality import QualityTracker
from factoryd.routing.scoring import heuristic_quality
from routing_kit import T0, arm, engine, pool


@pytest.mark.parametrize(
    ("priority", "kind", "value"),
    [
        ("low", "boilerplate", 0.5 * 0.6),
        ("normal", "generation", 1.0),
        ("high", "refactor", 2.0 * 0.9),
        ("critical", "security_review", 5.0 * 2.0),
        ("normal", "orchestration", 1.5),
        ("high", "explain", 2.0 * 0.7),
    ],
)
def test_value_score_is_priority_base_times_type_multiplier(
    priority: str, kind: str, value: float
) -> None:
    req = RouteRequest(task="t", priority=Priority(priority), type=TaskType(kind))
    assert req.value == pytest.approx(value)


def test_default_quality_thresholds() -> None:
    assert MIN_QUALITY[TaskType.BOILERPLATE] == 0.40
    assert MIN_QUALITY[TaskType.SECURITY_REVIEW] == 0.70
    assert MIN_QUALITY[TaskType.ORCHESTRATION] == 0.65
    assert RouteRequest(task="t", type=TaskType.REVIEW).quality_floor == 0.55


def test_heuristic_quality_steps_in_order() -> None:
    plain = ArmSpec(name="a", cli="command")
    req = RouteRequest(task="t", type=TaskType.PLANNING)
    assert heuristic_quality(plain, req) == 0.5
    big = ArmSpec(name="a", cli="command", context_window=200_000)
    assert heuristic_quality(big, req) == pytest.approx(0.65)
    thinker = ArmSpec(name="a", cli="command", context_window=100_000, thinking=("high",))
    assert heuristic_quality(thinker, req) == pytest.approx(0.8)
    debug = RouteRequest(task="t", type=TaskType.DEBUG)
    assert heuristic_quality(thinker, debug) == pytest.approx(0.7)
    no_tools = ArmSpec(name="a", cli="command", tools=False)
    assert heuristic_quality(no_tools, RouteRequest(task="t", requires_tools=True)) == 0.05
    local = ArmSpec(name="a", cli="command", local=True)
    assert heuristic_quality(local, req) == pytest.approx(0.55)
    hard = RouteRequest(task="t", complexity=0.8)
    assert heuristic_quality(local, hard) == pytest.approx(0.55 * 0.7)
    huge = ArmSpec(name="a", cli="command", context_window=10**6, thinking=("x",), local=True)
    assert heuristic_quality(huge, RouteRequest(task="t", type=TaskType.SECURITY_REVIEW)) == (
        pytest.approx(0.9)
    )


def test_cost_estimate_splits_sixty_forty() -> None:
    a = ArmSpec(name="a", cli="x", cost_per_1k_input=3.0, cost_per_1k_output=15.0)
    assert a.estimate_cost(10_000) == pytest.approx(0.6 * 10 * 3 + 0.4 * 10 * 15)


def test_scarcity_multiplier_examples() -> None:
    ledger = PoolLedger([pool("p", "runs", 100, scarcity_k=2.0)])
    ledger.advance(T0)
    ledger.pools["p"].used = 50
    assert ledger.multiplier("p", T0) == pytest.approx(4.0)
    ledger.pools["p"].used = 100
    assert ledger.multiplier("p", T0) is None  # exhausted: infeasible, not infinite
    aggressive = PoolLedger([pool("p", "runs", 100, scarcity_k=4.0)])
    aggressive.pools["p"].used = 50
    assert aggressive.multiplier("p", T0) == pytest.approx(16.0)


def test_use_it_or_lose_it_discount_near_reset() -> None:
    ledger = PoolLedger([pool("p", "runs", 100, window="5h")])
    start, end = _window(ledger, T0)
    ledger.pools["p"].used = 30
    assert ledger.multiplier("p", end - 1800) == 0.5  # 30 min before reset, 70% left
    assert ledger.multiplier("p", start + 60) == pytest.approx(1 / 0.7**2)
    ledger.pools["p"].used = 80  # only 20% left: no discount, scarcity applies, but
    # paced (test_routing_pacing.py): 20% left with 10% of the window to go is not scarce
    assert ledger.multiplier("p", end - 1800) == 1.0
    assert ledger.multiplier("p", start + 60) == pytest.approx(25.0)


def _window(ledger: PoolLedger, now: float) -> tuple[float, float]:
    ledger.advance(now)
    st = ledger.pools["p"]
    assert st.window_start is not None and st.window_end is not None
    return st.window_start, st.window_end


def test_score_is_quality_times_value_over_effective_cost() -> None:
    cheap = arm("cheap", cost_per_1k_input=0.1, cost_per_1k_output=0.1)
    dear = arm("dear", cost_per_1k_input=1.0, cost_per_1k_output=1.0, context_window=200_000)
    e = engine([dear, cheap], strategy="value_per_cost")
    req = RouteRequest(task="t", estimated_tokens=10_000, priority=Priority.HIGH)
    d = e.route(req, T0)
    assert d.arm == "cheap"
    by = {c.arm: c for c in d.candidates}
    assert by["cheap"].score == pytest.approx(0.5 * 2.0 / 1.0)
    assert by["dear"].score == pytest.approx(0.65 * 2.0 / 10.0)


def test_feasibility_drops_arms_lacking_what_the_task_needs() -> None:
    arms = [
        arm("no-tools", tools=False),
        arm("no-vision", vision=False),
        arm("shallow", thinking=("low",), vision=True),
        arm("ceiling", max_complexity=0.5, thinking=("high",), vision=True),
        arm("able", thinking=("high",), vision=True),
    ]
    e = engine(arms, strategy="value_per_cost")
    req = RouteRequest(
        task="t", requires_tools=True, requires_vision=True, effort="high", complexity=0.6
    )
    d = e.route(req, T0)
    assert d.arm == "able"
    reasons = {r.arm: r.reason for r in d.rejections}
    assert reasons == {
        "no-tools": RejectReason.LACKS_TOOLS,
        "no-vision": RejectReason.LACKS_VISION,
        "shallow": RejectReason.LACKS_EFFORT,
        "ceiling": RejectReason.TOO_COMPLEX,
    }


def test_pool_that_cannot_afford_the_estimate_is_infeasible() -> None:
    e = engine(
        [arm("small", pools=("tiny",)), arm("big", pools=("roomy",))],
        [pool("tiny", "tokens", 1000), pool("roomy", "tokens", 100_000)],
        strategy="value_per_cost",
    )
    d = e.route(RouteRequest(task="t", estimated_tokens=5000), T0)
    assert d.arm == "big"
    assert d.rejections[0].reason is RejectReason.POOL_INSUFFICIENT
    assert "tiny" in d.rejections[0].detail


def test_quality_floor_degrades_gracefully() -> None:
    weak = arm("weak")  # heuristic 0.5 < security_review floor 0.70
    e = engine([weak], strategy="value_per_cost")
    d = e.route(RouteRequest(task="t", type=TaskType.SECURITY_REVIEW), T0)
    assert d.arm == "weak" and d.degraded
    strong = arm("strong", context_window=200_000, thinking=("high",))  # 0.85
    e = engine([weak, strong], strategy="value_per_cost")
    d = e.route(RouteRequest(task="t", type=TaskType.SECURITY_REVIEW), T0)
    assert d.arm == "strong" and not d.degraded
    assert [(r.arm, r.reason) for r in d.rejections] == [("weak", RejectReason.BELOW_QUALITY)]


def test_quality_tracker_ema_min_observations_and_blend() -> None:
    q = QualityTracker()
    for ok in (True, False):
        q.observe("a", "debug", ok)
    assert q.observed("a", "debug") is None  # fewer than 3 observations
    assert q.blend("a", "debug", 0.5) == 0.5
    q.observe("a", "debug", True)
    mean = 2 / 3  # a plain mean while there are fewer than 1/alpha runs
    assert q.observed("a", "debug") == pytest.approx(mean)
    assert q.blend("a", "debug", 0.5) == pytest.approx(0.7 * mean + 0.3 * 0.5)
    assert q.observed("a", "review") is None  # per task type
    for _ in range(20):
        q.observe("a", "debug", False)
    # then a moving average with weight alpha (0.1) on the newest run
    before = q.observed("a", "debug")
    q.observe("a", "debug", True)
    assert q.observed("a", "debug") == pytest.approx(0.1 + 0.9 * before)


def test_unlucky_runs_do_not_lock_a_good_arm_out_of_the_floor() -> None:
    """Two failures in three runs keep the floor's upper bound above a 0.55 floor;
    a long failing record puts the arm below it."""
    e = engine([arm("a")], strategy="balanced")
    req = RouteRequest(task="t", type=TaskType.REVIEW)  # floor 0.55
    for ok in (True, False, False):
        e.quality.observe("a", "review", ok)
    d = e.route(req, T0)
    assert d.arm == "a" and not d.degraded
    c = d.ranking[0][2].components
    assert c is not None and c.task_fit < 0.55 < c.fit_upper
    for _ in range(30):
        e.quality.observe("a", "review", False)
    assert e.route(RouteRequest(task="u", type=TaskType.REVIEW), T0).degraded


def test_an_escalation_ranks_by_task_fit() -> None:
    """The run after a failure goes to the arm most likely to succeed, even
    when a weaker one scores higher (here: free against paid)."""
    free = arm("free", local=True)
    paid = arm("paid", cost_per_1k_input=0.003, cost_per_1k_output=0.015)
    e = engine([arm("first"), free, paid], strategy="balanced")
    for i in range(12):
        e.quality.observe("free", "debug", i % 2 == 0)  # 0.5: above the 0.5 floor's bound
        e.quality.observe("paid", "debug", True)
    req = RouteRequest(task="t", type=TaskType.DEBUG, estimated_tokens=40_000)
    assert e.route(req, T0).arm == "free"  # $0.31 a run against free: it scores higher
    assert e.route(replace(req, task="u"), T0, exclude={"first"}).arm == "paid"


def test_observed_outcomes_move_the_decision() -> None:
    e = engine([arm("a"), arm("b")], strategy="value_per_cost")
    req = RouteRequest(task="t", type=TaskType.DEBUG)
    assert e.route(req, T0).arm == "a"  # tie: config order
    for _ in range(3):
        e.quality.observe("a", "debug", False)
        e.quality.observe("b", "debug", True)
    assert e.route(req, T0).arm == "b"


def test_scores_stay_finite() -> None:
    e = engine([arm("a", pools=("p",))], [pool("p", "runs", 100)], strategy="value_per_cost")
    e.ledger.pools["p"].used = 99.999
    d = e.route(RouteRequest(task="t"), T0)
    assert d.arm is None or math.isfinite(d.candidates[0].score)


def test_scarcity_policy_cap_is_configurable() -> None:
    ledger = PoolLedger([pool("p", "runs", 100)], ScarcityPolicy(max_multiplier=10))
    ledger.pools["p"].used = 99
    assert ledger.multiplier("p", T0) == 10
