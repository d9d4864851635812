"""The planner on plain values: which tasks start, which runs stop, what capacity allows.

No reconciler, no config file, no clock: `plan` and `Capacity` are pure.
"""

from __future__ import annotations

from dataclasses import replace

from factoryd.core.lifecycle import TaskPhase
from factoryd.core.taskspec import TaskKind, TaskSpec
from factoryd.reconcile.planner import Capacity, Caps, plan, stop_reason
from factoryd.reconcile.runstate import ActiveRun, TaskState
from factoryd.routing.decision import Decision
from factoryd.routing.model import ArmSpec, Priority, RouteRequest


def spec(name: str, priority: Priority = Priority.NORMAL, **kw: object) -> TaskSpec:
    route = RouteRequest(name, priority=priority)
    return TaskSpec(name=name, kind=TaskKind.SERVICE, route=route, **kw)  # type: ignore[arg-type]


def state(name: str, waiting_since: float = 0.0, **kw: object) -> TaskState:
    rt = TaskState(spec=spec(name, **kw), label=name)
    rt.waiting_since = waiting_since
    return rt


def run_of(rt: TaskState, arm: str = "a", pools: tuple[str, ...] = ("p",)) -> ActiveRun:
    decision = Decision(rt.name, "test", 0.0, arm, None, (), ())
    rt.run = f"r-{rt.name}"
    return ActiveRun(
        rt.run, rt.name, rt.spec, arm, "command", pools, decision, None, 0.0, 0.0, None, None
    )


def test_the_most_urgent_start_first_and_the_rest_queue_for_a_slot() -> None:
    low = state("low", 0.0, priority=Priority.LOW)
    old = state("old", 1.0)
    new = state("new", 2.0)
    crit = state("crit", 3.0, priority=Priority.CRITICAL)
    tasks = {t.name: t for t in (low, old, new, crit)}
    todo = plan(tasks, tasks.values(), {}, now=10.0, caps=Caps(max_concurrent=2))
    assert [t.name for t in todo.starts] == ["crit", "old"]
    assert {t.name for t in todo.queued} == {"new", "low"}
    assert todo.stops == []


def test_backoff_and_unfired_schedules_keep_a_task_out_of_the_plan() -> None:
    backing = state("backing")
    backing.retry_at = 20.0
    cron = TaskState(spec=replace(spec("cron"), kind=TaskKind.SCHEDULED), label="cron")
    tasks = {"backing": backing, "cron": cron}
    assert plan(tasks, tasks.values(), {}, 10.0, Caps(8)).starts == []
    cron.pending_fires = 1
    assert [t.name for t in plan(tasks, tasks.values(), {}, 20.0, Caps(8)).starts] == [
        "backing",
        "cron",
    ]


def test_a_run_stops_when_its_task_is_removed_changed_disabled_or_cancelled() -> None:
    rt = state("t")
    run = run_of(rt)
    assert stop_reason(run, rt) is None
    assert stop_reason(run, None) == "task removed from config"
    assert stop_reason(run, replace(rt, spec=replace(rt.spec, timeout=5.0))) == (
        "task changed in config"
    )
    disabled = replace(rt.spec, enabled=False)
    assert stop_reason(replace(run, spec=disabled), replace(rt, spec=disabled)) == "task disabled"
    rt.phase, rt.reason = TaskPhase.CANCELLED, "cancelled by operator"
    assert stop_reason(run, rt) == "cancelled by operator"
    run.stop_reason = "already stopping"
    assert stop_reason(run, rt) is None  # asked once


def test_capacity_knows_when_every_allowed_arm_is_at_its_cap() -> None:
    arms = {
        "a": ArmSpec(name="a", cli="command", pools=("p",)),
        "b": ArmSpec(name="b", cli="command", pools=("q",)),
        "off": ArmSpec(name="off", cli="command", pools=("q",), enabled=False),
    }
    pools = {n: a.pools for n, a in arms.items()}
    caps = Caps(8, per_arm={"a": 1}, per_pool={"q": 1}, arm_pools=pools)
    cap = Capacity(caps, [])
    assert cap.busy_arms() == set() and not cap.all_busy(arms, (), ())
    cap.take("a", ("p",))
    assert cap.busy_arms() == {"a"}
    assert cap.all_busy(arms, ("a",), ()) and not cap.all_busy(arms, (), ())
    cap.take("b", ("q",))  # pool q is full: b (and the disabled arm on q) are busy
    assert cap.busy_arms() == {"a", "b", "off"}
    assert cap.all_busy(arms, (), ())  # a disabled arm does not count either way
    assert not cap.all_busy(arms, (), ("a",))  # an excluded arm is a routing matter
    assert not cap.all_busy(arms, ("nope",), ())  # no arm at all is not a capacity wait


def test_capacity_without_caps_never_calls_an_arm_busy() -> None:
    """The uncapped fast path: however many runs take an arm, nothing is busy
    (and a later config with caps is a new Capacity, built each pass)."""
    arms = {"a": ArmSpec(name="a", cli="command", pools=("p",))}
    cap = Capacity(Caps(2, arm_pools={"a": ("p",)}), [])
    for _ in range(5):
        cap.take("a", ("p",))
    assert cap.busy_arms() == set() and not cap.all_busy(arms, ("a",), ())
    capped = Capacity(Caps(2, per_pool={"p": 1}, arm_pools={"a": ("p",)}), [])
    capped.take("a", ("p",))
    assert capped.busy_arms() == {"a"} and capped.all_busy(arms, ("a",), ())
