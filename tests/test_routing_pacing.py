"""Pacing: a windowed pool's scarcity is its fill judged against its window's time left.

Unpaced, a subscription window half used was 4x dear whatever the hour, and
the default strategy paid a per-token key while the subscription's
capacity expired at the reset; these tests fail on that rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from factoryd.config.loader import load_config
from factoryd.routing.engine import RoutingEngine
from factoryd.routing.ledger import PoolLedger, ScarcityPolicy
from factoryd.routing.model import RouteRequest, TaskType
from factoryd.routing.pacing import pace_step, paced_fraction
from routing_kit import T0, arm, engine, pool


def window(ledger: PoolLedger, name: str, now: float) -> tuple[float, float]:
    ledger.advance(now)
    st = ledger.pools[name]
    assert st.window_start is not None and st.window_end is not None
    return st.window_start, st.window_end


def test_pace_steps_split_the_window_and_say_when_the_step_ends() -> None:
    assert pace_step(0.0, 100.0, 0.0, 20) == (1.0, 5.0)
    assert pace_step(0.0, 100.0, 52.0, 20) == (pytest.approx(0.5), 55.0)
    assert pace_step(0.0, 100.0, 99.9, 20) == (pytest.approx(0.05), 100.0)
    assert paced_fraction(0.3, 0.0, 100.0, 52.0, 20) == pytest.approx(0.6)
    assert paced_fraction(0.8, 0.0, 100.0, 52.0, 20) == 1.0  # under pace: capped
    assert paced_fraction(0.3, 0.0, 100.0, 52.0, 0) == 0.3  # off


def test_a_half_used_window_is_scarce_early_and_not_late() -> None:
    ledger = PoolLedger([pool("sub", "tokens", 1000, window="5h")])
    start, end = window(ledger, "sub", T0)
    ledger.pools["sub"].used = 500
    # A quarter of the way in, half gone: used twice as fast as the window runs.
    assert ledger.multiplier("sub", start + 0.25 * (end - start)) == pytest.approx(
        1 / (0.5 / 0.75) ** 2
    )
    # Three quarters in, half left: what is left will be lost at the reset.
    assert ledger.multiplier("sub", start + 0.75 * (end - start)) == 1.0
    unpaced = PoolLedger([pool("sub", "tokens", 1000, window="5h")], ScarcityPolicy(pace_steps=0))
    window(unpaced, "sub", T0)
    unpaced.pools["sub"].used = 500
    assert unpaced.multiplier("sub", start + 0.75 * (end - start)) == pytest.approx(4.0)


def test_a_pool_without_a_window_is_not_paced() -> None:
    ledger = PoolLedger([pool("p", "runs", 100)])
    ledger.advance(T0)
    ledger.pools["p"].used = 50
    assert ledger.multiplier("p", T0 + 86400) == pytest.approx(4.0)


def choice_at(share: float, *, pace_steps: int = 20) -> str | None:
    """The arm chosen with 60% of a subscription window used, `share` of the way in."""
    eng = engine(
        [
            arm("paid", pools=["key"], cost_per_1k_input=0.003, cost_per_1k_output=0.015),
            arm("sub", pools=["five-hour"]),
        ],
        [pool("five-hour", "tokens", 100_000, window="5h"), pool("key", "usd", 1000)],
    )
    eng.ledger.scarcity_policy = ScarcityPolicy(pace_steps=pace_steps)
    start, end = window(eng.ledger, "five-hour", T0)
    eng.ledger.pools["five-hour"].used = 60_000
    req = RouteRequest(task="t", type=TaskType.GENERATION, estimated_tokens=20_000)
    decision = eng.route(req, start + share * (end - start))
    return decision.arm


def test_late_in_its_window_a_subscription_is_preferred_to_a_paid_key() -> None:
    # The same model on a subscription and on a paid key, 60% of the
    # subscription's window used. Early on the paid key wins (the
    # subscription goes too fast); from mid-window the subscription does,
    # where the unpaced rule kept paying until the last-hour discount.
    assert choice_at(0.05) == "paid"
    assert choice_at(0.6) == "sub"
    assert choice_at(0.6, pace_steps=0) == "paid"


def test_pacing_is_on_by_default_and_a_config_can_turn_it_off(tmp_path: Path) -> None:
    base = """
[daemon]
state_dir = "state"
metrics_listen = "off"

[[arms]]
name = "a"
cli = "claude"
"""
    (tmp_path / "on.toml").write_text(base)
    (tmp_path / "off.toml").write_text(base + "\n[routing.scarcity]\npace_steps = 0\n")
    on = RoutingEngine.from_config(load_config(tmp_path / "on.toml"))
    off = RoutingEngine.from_config(load_config(tmp_path / "off.toml"))
    assert on.ledger.scarcity_policy.pace_steps == 20
    assert off.ledger.scarcity_policy.pace_steps == 0
