"""A cascade over a task's remaining attempts (routing/cascade.py).

When a request says how many runs its task has left, the router tries the
cheap adequate arm first while attempts remain and the best fit on the last
one; a request that does not say is ranked as before. The attempt budget is
the task's restart budget (core.lifecycle.attempts_left).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest
from daemon_kit import header, task
from factoryd.core.lifecycle import RestartBook, attempts_left
from factoryd.core.taskspec import RestartPolicy, TaskKind, TaskSpec
from factoryd.routing.engine import RoutingEngine
from factoryd.routing.model import RejectReason, RouteRequest, TaskType
from reconcile_kit import Harness
from routing_kit import T0, arm, engine

DEBUG = TaskType.DEBUG  # quality floor 0.50


def models(rates: dict[str, float]) -> RoutingEngine:
    """cheap, mid and dear arms, priced 1x, 4x and 20x, each with an observed success rate."""
    e = engine(
        [
            arm("cheap", cost_per_1k_input=0.001, cost_per_1k_output=0.001),
            arm("mid", cost_per_1k_input=0.004, cost_per_1k_output=0.004),
            arm("dear", cost_per_1k_input=0.02, cost_per_1k_output=0.02),
        ]
    )
    for name, rate in rates.items():
        for i in range(40):  # successes spread evenly, as the moving average wants
            e.quality.observe(name, str(DEBUG), int((i + 1) * rate) > int(i * rate))
    return e


def pick(e: RoutingEngine, left: int | None, exclude: tuple[str, ...] = ()) -> str | None:
    req = RouteRequest(task="t", type=DEBUG, estimated_tokens=40_000, attempts_left=left)
    return e.route(req, T0, exclude=exclude).arm  # the arms draw on no pool: nothing held


RATES = {"cheap": 0.2, "mid": 0.7, "dear": 0.9}


def test_with_attempts_to_spare_the_cheap_arm_goes_first_even_below_the_floor() -> None:
    e = models(RATES)
    # Three attempts and three arms: every arm runs before the task gives up,
    # so the order changes the price, not the chance; cheapest first.
    assert pick(e, 2) == "cheap"
    # after it failed: two attempts, two arms left; the cheaper one first
    assert pick(e, 1, exclude=("cheap",)) == "mid"
    # the last attempt takes the best fit left
    assert pick(e, 0, exclude=("cheap", "mid")) == "dear"


def test_the_plan_is_the_arms_most_likely_to_succeed() -> None:
    e = models(RATES)
    # Two attempts, three arms: the cheap weak arm would take an attempt
    # from a strong one, so the plan is mid and dear, mid first.
    assert pick(e, 1) == "mid"
    # the last attempt, or a task with no retries, takes the best fit
    assert pick(e, 0) == "dear"


def test_a_nearly_as_good_cheap_arm_may_go_first_while_attempts_remain() -> None:
    e = engine(
        [
            *(arm(n, cost_per_1k_input=0.02, cost_per_1k_output=0.02) for n in "abc"),
            arm("thrifty", cost_per_1k_input=0.001, cost_per_1k_output=0.001),
        ]
    )
    for i in range(40):
        for name in "abc":
            e.quality.observe(name, str(DEBUG), i % 10 != 0)  # 0.9
        e.quality.observe("thrifty", str(DEBUG), i % 20 not in (0, 7, 14))  # 0.85
    # three attempts: thrifty now and two strong arms after it miss barely
    # more often than three strong arms, so the price decides
    assert pick(e, 2) == "thrifty"
    # on the last attempt the best fit goes
    assert pick(e, 0) in ("a", "b", "c")


def test_without_an_attempt_budget_the_ranking_is_as_before() -> None:
    e = models(RATES)
    # below the floor the cheap arm is set aside; the score prefers mid
    assert pick(e, None) == "mid"
    # an escalation ranks by fit
    assert pick(e, None, exclude=("cheap",)) == "dear"


def test_a_cascade_decision_says_so() -> None:
    e = models(RATES)
    req = RouteRequest(task="t", type=DEBUG, estimated_tokens=40_000, attempts_left=2)
    decision = e.route(req, T0)
    # the cheap arm runs below the floor by plan, not because no arm met it
    assert decision.arm == "cheap" and not decision.degraded and not decision.by_fit
    assert [(c.arm, c.below_quality) for c in decision.candidates] == [
        ("cheap", True),
        ("mid", False),
        ("dear", False),
    ]
    # with one attempt to spare, the floor keeps the cheap arm out as before
    decision = e.route(replace(req, attempts_left=1), T0)
    assert [c.arm for c in decision.candidates] == ["mid", "dear"]
    assert not decision.degraded
    assert [r.arm for r in decision.rejections if r.reason is RejectReason.BELOW_QUALITY] == [
        "cheap"
    ]


def test_attempts_left_is_the_restart_budget_in_its_window() -> None:
    route = RouteRequest(task="t")
    spec = TaskSpec(
        name="t", kind=TaskKind.ONESHOT, route=route, max_restarts=2, restart_window=600.0
    )
    assert attempts_left(spec, RestartBook.empty(), 1000.0) == 2
    book = RestartBook(restarts=deque([500.0, 900.0]))
    assert attempts_left(spec, book, 1000.0) == 0
    # a restart older than the window no longer counts
    assert attempts_left(spec, book, 1150.0) == 1
    never = TaskSpec(
        name="t", kind=TaskKind.ONESHOT, route=route, restart=RestartPolicy.NEVER, max_restarts=5
    )
    assert attempts_left(never, RestartBook.empty(), 1000.0) == 0


ARMS = """
[[arms]]
name = "thrifty"
cli = "command"
cost_per_1k_input = 0.001
cost_per_1k_output = 0.001

[[arms]]
name = "strong"
cli = "command"
cost_per_1k_input = 0.02
cost_per_1k_output = 0.02
"""


@pytest.mark.parametrize(("max_restarts", "arm_used"), [(0, "strong"), (2, "thrifty")])
def test_the_reconciler_routes_with_the_tasks_restart_budget(
    tmp_path: Path, max_restarts: int, arm_used: str
) -> None:
    one = task(
        "fix",
        "pass",
        type="debug",
        estimated_tokens=40_000,
        arms=["thrifty", "strong"],
        max_restarts=max_restarts,
    )
    h = Harness(tmp_path, header(tmp_path) + ARMS + one)
    for i in range(40):
        h.rec.engine.quality.observe("thrifty", "debug", i % 5 != 0)  # 0.8
        h.rec.engine.quality.observe("strong", "debug", i % 20 != 0)  # 0.95
    h.step()
    # No retry left: the best fit. Retries left: the cheap adequate arm first.
    assert h.rec.runs[h.run_of("fix")].arm == arm_used
