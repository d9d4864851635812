"""The router's cached arm views and pool quotes never change a decision.

Two engines get the same configuration and the same random history of
decisions, settlements, faults, limits, quality signals and clock jumps
(forwards past backoffs, staleness, window resets and discount windows, and
backwards). One keeps its caches; the other forgets every cache and every
telemetry sum before each decision. Every decision must come out identical,
explanation included.
"""

from __future__ import annotations

from factoryd.routing.engine import RoutingEngine
from factoryd.routing.model import Priority, RouteRequest, TaskType, Usage
from hypothesis import given, settings
from hypothesis import strategies as st
from routing_kit import T0, arm, engine, pool

ARMS = [
    arm("fast", pools=("plan",), context_window=200_000, thinking=("high",)),
    arm("cheap", pools=("plan", "usd"), cost_per_1k_input=0.5, cost_per_1k_output=2.0),
    arm("local", pools=("gpu",), local=True, tools=False, fallback=False),
    arm("strict", pools=("usd",), max_complexity=0.5, fallback=False, rates={"usd": 3.0}),
    arm("free", pools=(), cost_per_1k_input=1.0),
]
POOLS = [
    pool("plan", "runs", 6, "1h"),
    pool("usd", "usd", 5.0, "5m"),
    pool("gpu", "tokens", 200_000),
]
REQUESTS = [
    RouteRequest(task="a", type=TaskType.DEBUG, estimated_tokens=20_000),
    RouteRequest(task="b", priority=Priority.CRITICAL, complexity=0.8, estimated_tokens=1_000),
    RouteRequest(task="c", requires_tools=True, arms=("local", "cheap", "fast")),
    RouteRequest(task="d", effort="high", min_quality=0.6, estimated_tokens=50_000),
]
NAMES = [a.name for a in ARMS]

op = st.one_of(
    st.tuples(
        st.just("route"),
        st.integers(0, len(REQUESTS) - 1),
        st.sets(st.sampled_from(NAMES), max_size=2),
        st.sets(st.sampled_from(NAMES), max_size=2),
        st.sampled_from(["ok", "fail", "fault", "spawn", "limited", "open"]),
    ),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 30, 61, 299, 601, 1800, 3700, -90])),
    st.tuples(st.just("touch"), st.sampled_from(NAMES)),
    st.tuples(st.just("arm_limit"), st.sampled_from(NAMES), st.sampled_from([10, 400])),
    st.tuples(st.just("pool_limit"), st.sampled_from(["plan", "usd", "gpu"]), st.booleans()),
    st.tuples(st.just("unhealthy"), st.sampled_from(NAMES), st.booleans()),
)


def apply(e: RoutingEngine, o: tuple, now: float, open_decisions: list) -> str | None:
    """Apply one operation; return the decision's explanation for a route."""
    kind = o[0]
    if kind == "route":
        _, which, exclude, busy, ending = o
        d = e.route(REQUESTS[which], now, exclude=exclude, busy=busy)
        if d.arm is not None:
            if ending == "open":
                open_decisions.append(d)
            else:
                e.settle(
                    d,
                    now=now,
                    usage=None if ending == "spawn" else Usage(input_tokens=900, output_tokens=300),
                    ok=ending == "ok",
                    duration=12.0,
                    task_type=str(REQUESTS[which].type),
                    arm_fault=ending == "fault",
                    limited=ending == "limited",
                )
        return repr(d.to_dict())
    if kind == "touch":
        e.telemetry.touch(o[1], now)
    elif kind == "arm_limit":
        e.report_limit(o[1], now + o[2], now, "test")
    elif kind == "pool_limit":
        if o[2]:
            e.ledger.hold_limit([o[1]], now + 120, "test")
        else:
            e.ledger.hold_limit_unknown([o[1]], now, "test")
    elif kind == "unhealthy":
        e.telemetry.arm(o[1]).healthy = o[2]
    return None


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=50))
def test_cached_and_fresh_routers_decide_identically(ops: list[tuple]) -> None:
    cached, fresh = engine(ARMS, POOLS), engine(ARMS, POOLS)
    now = T0
    open_c: list = []
    open_f: list = []
    for o in ops:
        if o[0] == "tick":
            now += o[1]
            continue
        fresh.router.forget()
        for tel in fresh.telemetry.arms.values():
            tel.invalidate()
        assert apply(cached, o, now, open_c) == apply(fresh, o, now, open_f), o
        # Rejection sentences and the ledger must agree too, not only the choice.
        assert {n: (p.used, p.reserved) for n, p in cached.ledger.pools.items()} == {
            n: (p.used, p.reserved) for n, p in fresh.ledger.pools.items()
        }


def test_a_settled_run_changes_only_its_own_arms_view() -> None:
    e = engine(ARMS, POOLS)
    req = REQUESTS[0]
    first = e.route(req, T0)
    views_before = {v.arm.name: v for _, _, v in first.ranking}
    e.settle(first, now=T0, usage=Usage(output_tokens=10), ok=True, duration=3.0, task_type="debug")
    second = e.route(req, T0 + 1)
    views_after = {v.arm.name: v for _, _, v in second.ranking}
    rebuilt = {n for n in views_after if views_after[n] is not views_before.get(n)}
    assert rebuilt == {first.arm}


def test_a_view_expires_when_its_backoff_ends() -> None:
    e = engine([arm("a"), arm("b")])
    for _ in range(3):
        e.telemetry.fault("a", T0)
    until = e.telemetry.arms["a"].backoff_until
    assert until is not None
    resting = e.route(RouteRequest(task="t"), until - 1)
    assert [r.reason for r in resting.rejections] == ["backoff"]
    back = e.route(RouteRequest(task="t"), until)
    assert not back.rejections and {c.arm for c in back.candidates} == {"a", "b"}


def test_a_clock_step_back_does_not_reuse_views_from_the_future() -> None:
    e = engine([arm("a", fallback=False)])
    e.telemetry.touch("a", T0)
    assert e.route(RouteRequest(task="t"), T0 + 700).arm is None  # stale by then
    assert e.route(RouteRequest(task="t"), T0 + 10).arm == "a"  # clock stepped back


def test_the_change_log_answers_which_arms_changed_or_that_it_forgot() -> None:
    from factoryd.routing.versions import LOG_LIMIT, ArmVersions

    v = ArmVersions()
    start = v.position
    v.bump("a")
    v.bump("b")
    assert v.changed_since(start) == ["a", "b"] and v.of("a") == 1
    middle = v.position
    for _ in range(LOG_LIMIT):
        v.bump("c")
    assert v.changed_since(start) is None  # too far behind: re-check every arm
    assert v.changed_since(v.position) == []
    assert v.of("c") == LOG_LIMIT and middle < v.position
