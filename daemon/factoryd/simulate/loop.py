"""The discrete-event loop: the reconciler's routing life, with an injected clock.

One `Simulation` plays one policy over one seed's world. It does for the
engine what the reconciler does for it, in the same order and with the
same arguments: tasks wanting a run are taken in priority order up to
`max_concurrent`; `route` gets the task's excluded arms (the one that just
hit a limit or failed it: `core.lifecycle.exclusions_after`) and the arms at
their concurrency cap; a run's end is settled
with what it used; a limit is reported with the provider's reset time (or
none); the task's next phase comes from the daemon's own state machine
(`core.lifecycle.verdict_after_run`). Nothing runs: each run's end is an event on
a heap, so a week takes as long as its decisions.

Time only moves from event to event. Where the reconciler polls a blocked
task every `loop_interval`, the loop wakes it when something it could
depend on changes (a hold ends, a window resets, a backoff ends, a run
ends, a task arrives), which gives the same decisions without a million
empty passes.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from factoryd.config.model import Config
from factoryd.core.lesson import lesson
from factoryd.core.lifecycle import (
    RestartBook,
    TaskPhase,
    attempts_left,
    exclusions_after,
    verdict_after_run,
)
from factoryd.core.outcome import Outcome
from factoryd.core.taskspec import TaskKind, TaskSpec
from factoryd.routing.decision import Decision
from factoryd.routing.engine import RoutingEngine
from factoryd.routing.model import Priority, RouteRequest
from factoryd.simulate.policies import Policy
from factoryd.simulate.scenario import Scenario
from factoryd.simulate.world import Plan, World

PRIORITY_ORDER = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
_ARRIVE, _END, _WAKE = 0, 1, 2
_CAPACITY_REASONS = ("at_capacity", "not_allowed", "disabled")


@dataclass(slots=True)
class SimTask:
    id: int
    spec: TaskSpec
    req: RouteRequest
    arrived: float
    book: RestartBook = field(default_factory=RestartBook.empty)
    exclude: set[str] = field(default_factory=set)
    attempts: int = 0
    first_start: float | None = None
    retry_at: float | None = None
    waiting_since: float = 0.0
    #: None while the task still wants a run; else its final phase.
    done: TaskPhase | None = None
    #: The last attempt to route it found no arm (not merely no free slot).
    blocked: bool = False


@dataclass(slots=True)
class SimRun:
    task: SimTask
    arm: str
    pools: tuple[str, ...]
    decision: Decision
    plan: Plan
    started: float


@dataclass(slots=True)
class Tally:
    """What one policy achieved over one seed."""

    arrived: int = 0
    succeeded: int = 0
    value: float = 0.0
    usd: float = 0.0
    runs: int = 0
    limit_hits: int = 0
    wasted_runs: int = 0
    waits: list[float] = field(default_factory=list)
    pool_use: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def never_done(self) -> int:
        return self.arrived - self.succeeded


class Simulation:
    def __init__(
        self,
        config: Config,
        scenario: Scenario,
        world: World,
        policy: Policy,
        seed: int,
        *,
        trace: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """`trace`, if given, receives every call made to the engine, in order:
        ("route", now, task, request, exclude, busy, ttl, arm, forced) and
        ("settle", now, task, arm, outcome, usage, duration, reported_until,
        limit_text, held_until)."""
        self.config = config
        self.s = scenario
        self.world = world
        self.policy = policy
        self.engine: RoutingEngine = policy.engine
        self.rng = random.Random(f"{seed}:{policy.name}:backoff")
        self.trace = trace
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.pending: dict[int, SimTask] = {}
        self.runs: dict[int, SimRun] = {}
        self.tally = Tally()
        self.wake_at = math.inf
        self.max_concurrent = config.daemon.max_concurrent
        self.loop_interval = config.daemon.loop_interval
        self.templates: dict[str, tuple[TaskSpec, RouteRequest]] = {}
        for name, spec in config.templates.items():
            # A submission is a unit of work: it runs to completion, never forever.
            if spec.kind is not TaskKind.ONESHOT:
                spec = replace(spec, kind=TaskKind.ONESHOT, schedule=None)
            self.templates[name] = (spec, spec.route)

    def push(self, t: float, kind: int, obj: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, obj))

    def run(self) -> Tally:
        for i, (t, template) in enumerate(self.world.arrivals()):
            self.push(t, _ARRIVE, (i, template))
        end = self.s.end
        while self.heap and self.heap[0][0] <= end:
            now = self.heap[0][0]
            if now >= self.wake_at:
                self.wake_at = math.inf
            while self.heap and self.heap[0][0] == now:
                _, _, kind, obj = heapq.heappop(self.heap)
                if kind == _ARRIVE:
                    self._arrive(obj[0], obj[1], now)
                elif kind == _END:
                    self._finish(obj, now)
            self._dispatch(now)
        for task in self.pending.values():
            self.tally.waits.append((task.first_start or end) - task.arrived)
        for run in self.runs.values():
            if run.task.first_start is not None:
                self.tally.waits.append(run.task.first_start - run.task.arrived)
        return self.tally

    # -- tasks -------------------------------------------------------------

    def _arrive(self, i: int, template: str, now: float) -> None:
        spec, req = self.templates[template]
        name = f"{template}-{i}"
        task = SimTask(i, replace(spec, name=name), replace(req, task=name), now, waiting_since=now)
        self.pending[i] = task
        self.tally.arrived += 1

    def _dispatch(self, now: float) -> None:
        wanted = [t for t in self.pending.values() if t.retry_at is None or now >= t.retry_at]
        free = self.max_concurrent - len(self.runs)
        if wanted and free > 0:

            def order(t: SimTask) -> tuple[int, float, int]:
                return PRIORITY_ORDER[t.req.priority], t.waiting_since, t.id

            first = (
                sorted(wanted, key=order)
                if free >= len(wanted)
                else heapq.nsmallest(free, wanted, key=order)
            )
            for task in first:
                self._start(task, now)
        self._schedule_wake(now)

    def _start(self, task: SimTask, now: float) -> None:
        spec = task.spec
        ttl = None if spec.timeout is None else spec.timeout + spec.stop_grace + 60.0
        busy = self._busy_arms()
        req = replace(task.req, attempts_left=attempts_left(spec, task.book, now))
        decision = self.policy.choose(
            req,
            now,
            task=task.id,
            attempt=task.attempts,
            exclude=task.exclude,
            busy=busy,
            ttl=ttl,
        )
        if self.trace is not None:
            self.trace.append(
                (
                    "route",
                    now,
                    task.id,
                    req,
                    frozenset(task.exclude),
                    frozenset(busy),
                    ttl,
                    decision.arm if decision else None,
                    None if decision is None else decision.forced,
                )
            )
        if decision is None or decision.arm is None:
            excluded = bool(task.exclude)
            task.exclude.clear()
            if self._capacity_only(task, decision, busy):
                return
            # Without its exclusions the next attempt may well find an arm.
            task.retry_at, task.blocked = now + self.loop_interval, not excluded
            return
        task.blocked = False
        arm = self.engine.arms[decision.arm]
        plan = self.world.plan(
            task.id, task.attempts, arm, str(task.req.type), now, spec.timeout, spec.stall_timeout
        )
        task.attempts += 1
        if task.first_start is None:
            task.first_start = now
            self.tally.waits.append(now - task.arrived)
        del self.pending[task.id]
        run = SimRun(task, arm.name, arm.pools, decision, plan, now)
        self.runs[task.id] = run
        self.push(plan.ends, _END, run)

    def _capacity_only(self, task: SimTask, decision: Decision | None, busy: set[str]) -> bool:
        """The reconciler's test: nothing refused the task but concurrency caps."""
        if decision is not None:
            rejections = decision.rejections
            return (
                bool(rejections)
                and all(r.reason in _CAPACITY_REASONS for r in rejections)
                and any(r.reason == "at_capacity" for r in rejections)
            )
        allowed = [a.name for a in self.engine.arms.values() if a.enabled]
        allowed = [n for n in (task.req.arms or allowed) if n in self.engine.arms]
        return bool(allowed) and all(n in busy for n in allowed)

    def _busy_arms(self) -> set[str]:
        per_arm = Counter(run.arm for run in self.runs.values())
        per_pool = Counter(p for run in self.runs.values() for p in run.pools)
        busy = set()
        for name, launch in self.config.launch.items():
            if launch.max_concurrent is not None and per_arm[name] >= launch.max_concurrent:
                busy.add(name)
        full = {p for p, cap in self.config.pool_caps.items() if per_pool[p] >= cap}
        if full:
            busy.update(a.name for a in self.config.arms if full.intersection(a.pools))
        return busy

    # -- runs --------------------------------------------------------------

    def _finish(self, run: SimRun, now: float) -> None:
        del self.runs[run.task.id]
        task, plan, tally = run.task, run.plan, self.tally
        outcome = plan.outcome
        duration = now - run.started
        settled = self.engine.settle(
            run.decision,
            now=now,
            usage=plan.usage,
            ok=outcome is Outcome.SUCCEEDED,
            duration=duration,
            task_type=str(task.req.type),
            limited=not lesson(outcome, "command").teaches,
        )
        until = None
        if outcome is Outcome.LIMITED and plan.limit is not None:
            until = self.engine.report_limit(run.arm, plan.limit.until, now, plan.limit.text)
            tally.limit_hits += 1
        if self.trace is not None:
            given = plan.limit.until if plan.limit else None
            text = plan.limit.text if plan.limit else ""
            self.trace.append(
                ("settle", now, task.id, run.arm, outcome, plan.usage, duration, given, text, until)
            )
        arm = self.engine.arms[run.arm]
        tally.runs += 1
        tally.usd += arm.cost_of(plan.usage)
        tally.pool_use.update(settled.committed)
        tally.outcomes[str(outcome)] += 1
        tally.wasted_runs += plan.wasted and outcome is Outcome.LIMITED
        if outcome is Outcome.CANCELLED and plan.restart:
            # The operator stopped the run and submitted the task again.
            task.book, task.exclude = RestartBook.empty(), set()
            task.retry_at, task.waiting_since = None, now
            self.pending[task.id] = task
            return
        verdict = verdict_after_run(
            task.spec, task.book, outcome, "simulated", duration, now, self.rng
        )
        task.exclude = exclusions_after(
            task.exclude, outcome, run.arm, allowed=task.req.arms, arms=self.engine.arms
        )
        task.retry_at, task.waiting_since = verdict.retry_at, now
        if verdict.phase in (TaskPhase.PENDING, TaskPhase.BACKING_OFF):
            self.pending[task.id] = task
            return
        task.done = verdict.phase
        if verdict.phase is TaskPhase.SUCCEEDED:
            tally.succeeded += 1
            tally.value += task.req.value

    # -- waking ------------------------------------------------------------

    def _schedule_wake(self, now: float) -> None:
        """Wake at the next instant a waiting task could be decided differently."""
        if not self.pending or len(self.runs) >= self.max_concurrent:
            return
        change = self._clock_change(now)
        at = math.inf
        for task in self.pending.values():
            if task.blocked:
                # The reconciler retries a blocked task after loop_interval, but
                # only a change of the engine's state can unblock it: wait for that.
                at = min(at, max(task.retry_at or now, change))
            elif task.retry_at is not None and task.retry_at > now:
                at = min(at, task.retry_at)
        if math.isfinite(at) and at < self.wake_at:
            self.wake_at = at
            self.push(at, _WAKE, None)

    def _clock_change(self, now: float) -> float:
        """The next instant the engine's own state changes with the clock."""
        times: list[float] = []
        for state in self.engine.ledger.pools.values():
            times += [t for t in (state.limited_until, state.window_end) if t is not None]
        times += [r.expires_at for r in self.engine.ledger.reservations.values()]
        for tel in self.engine.telemetry.arms.values():
            times += [t for t in (tel.backoff_until, tel.limited_until) if t is not None]
        extra = self.policy.wake(now)
        if extra is not None:
            times.append(extra)
        later = [t for t in times if t > now]
        return min(later) if later else math.inf
