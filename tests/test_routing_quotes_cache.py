"""The pool quotes' snapshot is handed out again only while no pool moved.

A decision that finds every pool's numbers as they were gets the same
snapshot object back, and the standings skip their per-pool scan for it
(quotes.py, standings.py). A pool that filled up, was limited, or was
written directly (the fleet mirror and operators set pool fields without
the ledger's methods) must be seen by the very next decision, and so must
a pool added by a reconfigure and the clock passing a quote's end.
"""

from __future__ import annotations

from factoryd.routing.engine import EngineSettings
from factoryd.routing.model import RejectReason, RouteRequest
from factoryd.routing.quotes import PoolQuotes
from routing_kit import T0, arm, engine, pool

ARMS = [
    arm("a", pools=("p",), context_window=200_000, thinking=("high",)),
    arm("b", pools=("q",)),
]
POOLS = [pool("p", "tokens", 100_000, "1h"), pool("q", "tokens", 100_000, "1h")]
REQ = RouteRequest(task="t", estimated_tokens=1_000)


def test_unchanged_pools_hand_back_the_same_snapshot_and_a_hold_a_new_one() -> None:
    e = engine(ARMS, POOLS)
    e.ledger.advance(T0)
    quotes = PoolQuotes()
    first = quotes.refresh(e.ledger, T0)
    assert quotes.refresh(e.ledger, T0 + 1) is first
    e.ledger.reserve("a", "t", {"p": 500.0}, T0 + 1, 60)
    second = quotes.refresh(e.ledger, T0 + 1)
    assert second is not first
    assert second["p"].reserved == 500.0 and second["p"].room == 99_500.0
    assert second["q"] is first["q"]  # the pool that did not move keeps its quote
    assert first["p"].reserved == 0.0  # a snapshot handed out never changes


def test_a_pool_filled_by_a_direct_write_is_seen_by_the_next_decision() -> None:
    e = engine(ARMS, POOLS)
    assert e.route(REQ, T0).arm == "a"
    e.ledger.rollback(e.route(REQ, T0 + 1).reservation.id)  # type: ignore[union-attr]
    e.ledger.pools["p"].used = 100_000.0  # as the fleet mirror writes it
    d = e.route(REQ, T0 + 2)
    assert d.arm == "b"
    assert [(r.arm, r.reason) for r in d.rejections] == [("a", RejectReason.POOL_EXHAUSTED)]


def test_a_pool_limit_and_its_end_are_seen_by_the_next_decision() -> None:
    e = engine(ARMS, POOLS)
    assert e.route(REQ, T0).arm == "a"
    e.ledger.pools["p"].limited_until = T0 + 100  # set directly, as an operator's tool may
    assert e.route(REQ, T0 + 1).arm == "b"
    assert e.route(REQ, T0 + 100).arm == "a"  # the clock passed the limit's end


def test_a_pool_added_by_a_reconfigure_is_quoted_at_the_next_decision() -> None:
    e = engine([arm("a", pools=("p",))], POOLS[:1])
    first = e.route(REQ, T0)
    assert set(first.multipliers) == {"p"}
    r = e.router
    e.reconfigure(
        EngineSettings(
            (arm("a", pools=("p", "q")),),
            tuple(POOLS),
            r.policy,
            e.ledger.scarcity_policy,
            e.quality.policy,
            e.telemetry.health,
        )
    )
    second = e.route(REQ, T0 + 1)
    assert set(second.multipliers) == {"p", "q"} and set(second.charges) == {"p", "q"}


def test_a_quote_past_its_end_is_made_again() -> None:
    e = engine(ARMS, POOLS)
    e.ledger.advance(T0)
    quotes = PoolQuotes()
    first = quotes.refresh(e.ledger, T0)
    until = min(q.until for q in first.values())
    assert quotes.refresh(e.ledger, until - 0.001) is first
    e.ledger.advance(until)
    assert quotes.refresh(e.ledger, until) is not first


def test_a_new_policy_is_in_the_very_next_decisions_views() -> None:
    """The views' context (value, floor, cost floor) is kept per request shape:
    a reconfigure must drop it, or the old policy's cost floor would stay."""
    from dataclasses import replace

    e = engine(ARMS, POOLS)
    before = e.route(REQ, T0).chosen
    assert before is not None and before.components.cost_floor == 0.05
    r = e.router
    settings = EngineSettings(
        tuple(ARMS),
        tuple(POOLS),
        replace(r.policy, cost_floor=1.0),
        e.ledger.scarcity_policy,
        e.quality.policy,
        e.telemetry.health,
    )
    e.reconfigure(settings)
    after = e.route(REQ, T0 + 1).chosen
    assert after is not None and after.components.cost_floor == 1.0


def test_tuples_built_without_their_constructor_have_every_field() -> None:
    """build_view and settle make Components, ArmView, RunSample and Settlement
    with tuple.__new__ (no Python frame): a field added to one must be added there."""
    from factoryd.routing.armview import ArmView
    from factoryd.routing.model import Usage
    from factoryd.routing.scoring import Components
    from factoryd.routing.telemetry import RunSample

    e = engine([arm("a", pools=("p",))], POOLS[:1])
    d = e.route(REQ, T0)
    s = e.settle(d, now=T0, usage=Usage(output_tokens=5), ok=True, duration=2.0, task_type="x")
    assert len(s) == 3 and s.committed == {"p": 5.0}
    tel = e.telemetry.arms["a"]
    assert (tel.sums_key, tel.buckets[-1].ok, tel.buckets[-1].tokens) == (None, 1, 5)
    view = e.route(REQ, T0 + 1).ranking[0][2]
    assert len(view) == len(ArmView._fields) and view.version == e.telemetry.versions.of("a")
    assert view.components is not None and len(view.components) == len(Components._fields)
    assert len(RunSample._fields) == 4


def test_equal_scores_still_go_by_the_tie_break_rank() -> None:
    """Standings.best finds the least score among floats only when it is unique;
    equal scores are left to the entries' comparison (tie-break rank)."""
    twins = [arm("b", pools=("p",)), arm("a", pools=("p",))]
    e = engine(twins, POOLS[:1])
    assert e.route(REQ, T0).arm == "b"  # config order
    prefer_a = RouteRequest(task="u", estimated_tokens=1_000, arms=("a", "b"))
    assert e.route(prefer_a, T0).arm == "a"  # the task's own order
    standings = e.router._by_request[id(prefer_a)][1]
    assert standings.scores[0] == standings.scores[1] and standings.best() is None
