"""Pool scarcity end to end: decisions drift away from a filling pool, an exhausted
pool keeps its arm out with a reason naming it, and a window reset brings it back."""

from __future__ import annotations

import pytest
from factoryd.routing.model import RejectReason, RouteRequest, Usage
from routing_kit import T0, arm, engine, pool

DAY = 86400.0


@pytest.mark.parametrize("strategy", ["balanced", "value_per_cost"])
def test_decisions_shift_before_exhaustion_and_return_after_reset(strategy: str) -> None:
    e = engine(
        [arm("A", pools=("pa",)), arm("B", pools=("pb",))],
        [pool("pa", "runs", 100, window="1d"), pool("pb", "runs", 100, window="1d")],
        strategy=strategy,
    )
    e.ledger.advance(T0)
    start = e.ledger.pools["pa"].window_start
    now = start + 60

    def run(req: RouteRequest) -> str | None:
        d = e.route(req, now)
        if d.arm is not None:
            e.settle(d, now=now, usage=Usage(), ok=True, duration=1, task_type="generation")
        return d.arm

    anything = RouteRequest(task="t")
    assert run(anything) == "A"  # equal arms: config order
    only_a = RouteRequest(task="t", arms=("A",))
    for _ in range(30):
        assert run(only_a) == "A"
    # pa is 31% used, pb empty: the next decision goes to B although pa has room.
    assert e.ledger.pools["pa"].remaining() > 0
    assert run(anything) == "B"
    # Left alone, the router spreads load so that neither pool runs dry first.
    picks = [run(anything) for _ in range(100)]
    assert {"A", "B"} <= set(picks)
    pa, pb = e.ledger.pools["pa"], e.ledger.pools["pb"]
    assert abs(pa.used - pb.used) <= 2
    # Drain pa: its arm is then rejected with a reason that names the pool.
    while run(only_a) == "A":
        pass
    d = e.route(anything, now)
    assert d.arm == "B"
    rejection = next(r for r in d.rejections if r.arm == "A")
    assert rejection.reason is RejectReason.POOL_EXHAUSTED
    assert "pool pa" in rejection.detail
    e.ledger.rollback(d.reservation.id)
    # A new window: both pools are empty again and A (first in config) wins.
    now = start + DAY + 60
    assert run(anything) == "A"
    assert e.ledger.pools["pa"].used == 1


def test_priority_scales_scarcity_in_the_balanced_strategy() -> None:
    """A low-value task steps off a filling pool sooner than a critical one."""
    cheap_scarce = arm("plan", pools=("plan",))
    pricey = arm("api", cost_per_1k_input=0.002, cost_per_1k_output=0.002)
    # Prices here are far below the default cost floor: lower it so that
    # the plan's arm is cheaper and only scarcity can move the choice.
    e = engine([cheap_scarce, pricey], [pool("plan", "runs", 100)], cost_floor=0.001)
    e.ledger.pools["plan"].used = 60
    low = RouteRequest(task="t", priority="low", type="boilerplate", estimated_tokens=1000)
    crit = RouteRequest(
        task="t", priority="critical", type="security_review", estimated_tokens=1000
    )
    d_low = e.route(low, T0)
    e.ledger.rollback(d_low.reservation.id)
    d_crit = e.route(crit, T0)
    assert d_low.arm == "api"
    assert d_crit.arm == "plan"
