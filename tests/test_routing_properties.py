"""Property tests: ledger invariants under random operations; the router never
misses a feasible arm and never picks an infeasible one."""

from __future__ import annotations

import math

from factoryd.routing.ledger import PoolLedger, Refusal
from factoryd.routing.model import RouteRequest, charge_estimate
from hypothesis import given, settings
from hypothesis import strategies as st
from routing_kit import T0, arm, engine, pool

POOLS = ["p0", "p1", "p2"]

op = st.one_of(
    st.tuples(
        st.just("reserve"),
        st.lists(st.sampled_from(POOLS), min_size=1, max_size=3, unique=True),
        st.floats(0, 60),
        st.floats(1, 600),
    ),
    st.tuples(st.just("commit"), st.integers(0, 40), st.floats(0, 80)),
    st.tuples(st.just("rollback"), st.integers(0, 40)),
    st.tuples(st.just("tick"), st.floats(0, 900)),
    st.tuples(st.just("limit"), st.sampled_from(POOLS), st.floats(0, 600)),
)


@settings(max_examples=300, deadline=None)
@given(
    limits=st.lists(st.floats(1, 500), min_size=3, max_size=3),
    windows=st.lists(st.sampled_from([None, "5m", "1h"]), min_size=3, max_size=3),
    ops=st.lists(op, max_size=60),
)
def test_used_and_reserved_never_negative_nor_above_what_was_charged(
    limits: list[float], windows: list[str | None], ops: list[tuple]
) -> None:
    ledger = PoolLedger(
        [pool(n, "tokens", lim, w) for n, lim, w in zip(POOLS, limits, windows, strict=True)]
    )
    now = T0
    ids: list[str] = []
    # What the model says was committed in each pool's current window.
    window_of = {n: None for n in POOLS}
    committed = dict.fromkeys(POOLS, 0.0)

    def sync_windows() -> None:
        for n in POOLS:
            st_ = ledger.pools[n]
            if st_.window_start != window_of[n]:
                if window_of[n] is not None:
                    committed[n] = 0.0
                window_of[n] = st_.window_start

    ledger.advance(now)
    sync_windows()
    for o in ops:
        kind = o[0]
        if kind == "reserve":
            _, pools, amount, ttl = o
            out = ledger.reserve("a", "t", dict.fromkeys(pools, amount), now, ttl)
            if not isinstance(out, Refusal):
                ids.append(out.id)
        elif kind == "commit" and ids:
            rid = ids[o[1] % len(ids)]
            res = ledger.reservations.get(rid)
            if res is not None:
                actual = dict.fromkeys(res.charges, o[2])
                ledger.commit(rid, actual)
                for p in actual:
                    committed[p] += o[2]
        elif kind == "rollback" and ids:
            ledger.rollback(ids[o[1] % len(ids)])
        elif kind == "tick":
            now += o[1]
            ledger.advance(now)
            sync_windows()
        elif kind == "limit":
            ledger.hold_limit([o[1]], now + o[2], "test")
        for n in POOLS:
            s = ledger.pools[n]
            live = math.fsum(r.charges.get(n, 0.0) for r in ledger.reservations.values())
            assert s.used >= 0 and s.reserved >= 0
            assert math.isclose(s.reserved, live, abs_tol=1e-9)
            assert s.used <= committed[n] + 1e-9
            assert all(r.expires_at > now for r in ledger.reservations.values()) or kind != "tick"


arm_strategy = st.builds(
    dict,
    tools=st.booleans(),
    vision=st.booleans(),
    thinking=st.lists(st.sampled_from(["low", "high"]), unique=True).map(tuple),
    max_complexity=st.one_of(st.none(), st.floats(0, 1)),
    pools=st.lists(st.sampled_from(POOLS), unique=True, max_size=2).map(tuple),
    enabled=st.booleans(),
    local=st.booleans(),
    context_window=st.sampled_from([0, 100_000, 200_000]),
)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(arm_strategy, min_size=1, max_size=6),
    used=st.lists(st.floats(0, 120), min_size=3, max_size=3),
    tools=st.booleans(),
    vision=st.booleans(),
    effort=st.sampled_from([None, "low", "high"]),
    complexity=st.floats(0, 1),
    tokens=st.integers(0, 60),
    strategy=st.sampled_from(["balanced", "weighted", "value_per_cost"]),
)
def test_chosen_arm_is_feasible_and_one_is_chosen_whenever_any_is(
    specs, used, tools, vision, effort, complexity, tokens, strategy
) -> None:
    arms = [arm(f"a{i}", **s) for i, s in enumerate(specs)]
    pools = [pool(n, "tokens", 100) for n in POOLS]
    e = engine(arms, pools, strategy=strategy)
    for n, u in zip(POOLS, used, strict=True):
        e.ledger.pools[n].used = u
    req = RouteRequest(
        task="t",
        requires_tools=tools,
        requires_vision=vision,
        effort=effort,
        complexity=complexity,
        estimated_tokens=tokens,
    )

    def feasible(a) -> bool:
        if not a.enabled or (tools and not a.tools) or (vision and not a.vision):
            return False
        if effort is not None and effort not in a.thinking:
            return False
        if a.max_complexity is not None and complexity > a.max_complexity:
            return False
        for p in a.pools:
            s = e.ledger.pools[p]
            if s.remaining() <= 0 or charge_estimate(s.spec, a, tokens) > s.remaining():
                return False
        return True

    expected = {a.name for a in arms if feasible(a)}  # judged before the reservation
    d = e.route(req, T0)
    assert (d.arm is not None) == bool(expected)
    if d.arm is not None:
        assert d.arm in expected
        assert all(math.isfinite(c.score) for c in d.candidates)
        best = d.candidates[0]
        assert best.arm == d.arm
