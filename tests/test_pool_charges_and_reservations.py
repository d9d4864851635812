"""Pool accounting: charges in each pool's unit, reservations that expire and are
all-or-nothing, resets, capped multipliers; one test per defect of seed B in
routing.md, so ours never has it."""

from __future__ import annotations

import math

import pytest
from factoryd.routing.decision import Decision
from factoryd.routing.ledger import PoolLedger, Refusal
from factoryd.routing.model import RejectReason, RouteRequest, Usage
from routing_kit import T0, arm, engine, pool


def settle(e, d: Decision, usage: Usage | None, now: float = T0) -> None:
    e.settle(d, now=now, usage=usage, ok=True, duration=1.0, task_type="generation")


def test_1_every_pool_is_charged_in_its_own_unit() -> None:
    a = arm("a", pools=("tok", "runs", "usd"), cost_per_1k_input=2.0, cost_per_1k_output=10.0)
    e = engine(
        [a], [pool("tok", "tokens", 1e9), pool("runs", "runs", 100), pool("usd", "usd", 100)]
    )
    d = e.route(RouteRequest(task="t", estimated_tokens=10_000), T0)
    assert d.charges == {
        "tok": 10_000,
        "runs": 1,
        "usd": pytest.approx(0.6 * 10 * 2 + 0.4 * 10 * 10),
    }
    settle(e, d, Usage(input_tokens=3000, output_tokens=1000, cost_usd=0.25))
    used = {n: s.used for n, s in e.ledger.pools.items()}
    assert used == {"tok": 4000, "runs": 1, "usd": 0.25}
    assert all(s.reserved == 0 for s in e.ledger.pools.values())


def test_1b_cost_is_computed_from_tokens_when_the_agent_reports_none() -> None:
    a = arm("a", pools=("usd",), cost_per_1k_input=1.0, cost_per_1k_output=5.0)
    e = engine([a], [pool("usd", "usd", 100)])
    d = e.route(RouteRequest(task="t", estimated_tokens=1000), T0)
    settle(e, d, Usage(input_tokens=2000, output_tokens=1000))
    assert e.ledger.pools["usd"].used == pytest.approx(2.0 + 5.0)


def test_1c_per_pool_rates_multiply_the_charge() -> None:
    a = arm("opus", pools=("plan",), rates={"plan": 5.0})
    e = engine([a], [pool("plan", "runs", 100)])
    d = e.route(RouteRequest(task="t"), T0)
    assert d.charges == {"plan": 5.0}
    settle(e, d, Usage())
    assert e.ledger.pools["plan"].used == 5.0


def test_2_use_it_or_lose_it_really_lowers_cost() -> None:
    e = engine(
        [arm("steady", pools=("a",)), arm("expiring", pools=("b",))],
        [pool("a", "runs", 100), pool("b", "runs", 100, window="5h")],
        strategy="value_per_cost",
    )
    e.ledger.advance(T0)
    end = e.ledger.pools["b"].window_end
    d = e.route(RouteRequest(task="t"), end - 600)
    assert d.arm == "expiring"
    chosen = d.chosen
    assert chosen is not None and chosen.components.scarcity == 0.5
    assert chosen.components.effective_cost < chosen.components.base_cost + 0.001


def test_3_reservations_expire_so_a_lost_run_cannot_leak_capacity() -> None:
    e = engine([arm("a", pools=("p",))], [pool("p", "runs", 2)])
    d1 = e.route(RouteRequest(task="t"), T0, ttl=60)
    d2 = e.route(RouteRequest(task="t"), T0, ttl=60)
    assert d1.arm == d2.arm == "a"
    assert e.route(RouteRequest(task="t"), T0 + 59).arm is None  # both held
    assert e.route(RouteRequest(task="t"), T0 + 60).arm == "a"  # both expired, one taken
    assert e.ledger.expired_total == 2
    # The lost run turns up after all: its usage counts, nothing goes negative.
    settle(e, d1, Usage(), now=T0 + 61)
    st = e.ledger.pools["p"]
    assert st.used == 1 and st.reserved == 1


def test_4a_reset_keeps_in_flight_reservations() -> None:
    e = engine([arm("a", pools=("p",))], [pool("p", "tokens", 1000, window="1h")])
    d = e.route(RouteRequest(task="t", estimated_tokens=300), T0)
    e.ledger.pools["p"].used = 500
    end = e.ledger.pools["p"].window_end
    e.ledger.advance(end + 1)
    st = e.ledger.pools["p"]
    assert st.used == 0 and st.reserved == 300
    settle(e, d, Usage(input_tokens=250), now=end + 2)
    assert st.used == 250 and st.reserved == 0


def test_4b_reset_catches_up_over_an_idle_gap_in_one_step() -> None:
    e = engine([arm("a", pools=("p",))], [pool("p", "runs", 100, window="1h")])
    e.ledger.advance(T0)
    e.ledger.pools["p"].used = 40
    later = T0 + 10 * 3600 + 5
    e.ledger.advance(later)
    assert e.ledger.pools["p"].used == 0
    e.ledger.pools["p"].used = 7  # usage in the new window
    for step in range(5):  # more calls in the same window must not wipe it
        e.ledger.advance(later + step)
    assert e.ledger.pools["p"].used == 7
    st = e.ledger.pools["p"]
    assert st.window_start <= later < st.window_end


def test_5a_reserve_is_all_or_nothing_across_pools() -> None:
    ledger = PoolLedger([pool("a", "runs", 10), pool("b", "runs", 1)])
    ledger.pools["b"].used = 1
    out = ledger.reserve("arm", "t", {"a": 1, "b": 1}, T0, 60)
    assert isinstance(out, Refusal) and out.pool == "b"
    assert ledger.pools["a"].reserved == 0 and not ledger.reservations


def test_5b_a_refused_reservation_moves_on_to_the_next_arm() -> None:
    class RacyLedger(PoolLedger):
        """Refuses `first` at reserve time although it looked affordable."""

        def reserve(self, arm, task, charges, now, ttl):  # type: ignore[override]
            if arm == "first":
                return Refusal("p1", RejectReason.POOL_EXHAUSTED, "pool p1 taken meanwhile")
            return super().reserve(arm, task, charges, now, ttl)

    e = engine(
        [arm("first", pools=("p1",)), arm("second", pools=("p2",))],
        [pool("p1", "runs", 10), pool("p2", "runs", 10)],
    )
    racy = RacyLedger(e.ledger.pools[p].spec for p in ("p1", "p2"))
    e.ledger = e.router.ledger = racy
    d = e.route(RouteRequest(task="t"), T0)
    assert d.arm == "second"
    assert [(r.arm, r.reason) for r in d.rejections] == [("first", RejectReason.RESERVE_FAILED)]


def test_6_forced_arm_is_still_checked_and_accounted() -> None:
    e = engine(
        [arm("best"), arm("forced", pools=("p",)), arm("off", enabled=False)],
        [pool("p", "runs", 1)],
    )
    d = e.route(RouteRequest(task="t"), T0, force="forced")
    assert d.arm == "forced" and d.forced
    settle(e, d, Usage())
    assert e.ledger.pools["p"].used == 1
    again = e.route(RouteRequest(task="t"), T0, force="forced")
    assert again.arm is None and again.rejections[0].reason is RejectReason.POOL_EXHAUSTED
    off = e.route(RouteRequest(task="t"), T0, force="off")
    assert off.arm is None and off.rejections[0].reason is RejectReason.DISABLED
    e.telemetry.arm("best").backoff_until = T0 + 10
    rest = e.route(RouteRequest(task="t"), T0, force="best")
    assert rest.arm is None and rest.rejections[0].reason is RejectReason.BACKOFF


def test_7_ties_are_deterministic_config_order_then_task_preference() -> None:
    names = ["z", "m", "a", "q"]
    for _ in range(5):
        e = engine([arm(n) for n in names])
        assert [c.arm for c in e.route(RouteRequest(task="t"), T0).candidates] == names
    pref = RouteRequest(task="t", arms=("q", "a"))
    e = engine([arm(n) for n in names])
    assert [c.arm for c in e.route(pref, T0).candidates] == ["q", "a"]


def test_8_cli_agent_arms_carry_pools_and_limits() -> None:
    claude = arm("claude", cli="claude", model="claude-sonnet", pools=("max",))
    codex = arm("codex", cli="codex", pools=("api",), cost_per_1k_input=1, cost_per_1k_output=1)
    e = engine([claude, codex], [pool("max", "runs", 50, window="5h"), pool("api", "usd", 10)])
    e.report_limit("claude", T0 + 3600, T0, "Claude AI usage limit reached")
    d = e.route(RouteRequest(task="t", estimated_tokens=1000), T0)
    assert d.arm == "codex"
    assert d.rejections[0].reason is RejectReason.POOL_LIMITED
    assert "max" in d.rejections[0].detail and "usage limit" in d.rejections[0].detail


def test_9_multipliers_are_capped_and_scores_finite() -> None:
    e = engine([arm("a", pools=("p",)), arm("b")], [pool("p", "runs", 1e6)])
    e.ledger.pools["p"].used = 1e6 - 1e-6
    d = e.route(RouteRequest(task="t"), T0)
    for c in d.candidates:
        assert math.isfinite(c.score) and c.components.scarcity <= 100
    assert e.ledger.multiplier("p", T0) == 100


def test_unknown_limit_escalates_per_pool_and_clears_on_success() -> None:
    e = engine([arm("a", pools=("p",))], [pool("p", "runs", 100, limit_backoff=60.0)])
    first = e.report_limit("a", None, T0, "quota")
    assert first == T0 + 60
    second = e.report_limit("a", None, first, "quota")
    assert second == first + 120
    d = e.route(RouteRequest(task="t"), second)
    e.settle(d, now=second, usage=Usage(), ok=True, duration=1, task_type="generation")
    assert e.report_limit("a", None, second, "quota") == second + 60
