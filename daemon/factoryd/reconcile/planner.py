"""The planner: from tasks and runs, which runs to start and which to stop.

Pure: no clock read, no I/O, no logging, nothing mutated. The loop hands it
the task table's view and the live runs; it answers with a `Plan`. It owns
capacity, every concurrency fact of the house in one place: the daemon's
`max_concurrent` (free slots), and the per-arm and per-pool caps (`Capacity`,
which tells the router which arms are busy and tells the loop, before any
routing, when every arm a task may use is at its cap).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from factoryd.config.model import Config
from factoryd.core.lifecycle import TaskPhase
from factoryd.core.taskspec import TaskKind
from factoryd.reconcile.runstate import ActiveRun, TaskState
from factoryd.routing.model import ArmSpec, Priority

PRIORITY_ORDER = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
#: The reason of a task that could start but for a free slot (one object, so
#: that a pass tells it by identity).
WAITING_FOR_SLOT = "waiting for a free slot"
#: The reason of a task whose every allowed arm is at its concurrency cap.
ARMS_AT_CAP = "every allowed arm is at its concurrency cap"


@dataclass(frozen=True, slots=True)
class Caps:
    """The concurrency limits of a config."""

    max_concurrent: int
    per_arm: Mapping[str, int] = field(default_factory=dict)
    per_pool: Mapping[str, int] = field(default_factory=dict)
    arm_pools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Caps:
        return cls(
            max_concurrent=config.daemon.max_concurrent,
            per_arm={
                name: launch.max_concurrent
                for name, launch in config.launch.items()
                if launch.max_concurrent is not None
            },
            per_pool=dict(config.pool_caps),
            arm_pools={arm.name: arm.pools for arm in config.arms},
        )


class Capacity:
    """Per-arm and per-pool occupancy during one pass; `take` as runs start."""

    def __init__(self, caps: Caps, runs: Iterable[ActiveRun]) -> None:
        self.caps = caps
        #: No per-arm or per-pool cap configured: no arm is ever busy, and a
        #: start asks nothing (the common case, asked twice per start).
        self._uncapped = not caps.per_arm and not caps.per_pool
        self._per_arm: Counter[str] = Counter()
        self._per_pool: Counter[str] = Counter()
        for run in runs:
            self.take(run.arm, run.pools)

    def take(self, arm: str, pools: Iterable[str]) -> None:
        if self._uncapped:
            return
        self._per_arm[arm] += 1
        self._per_pool.update(pools)

    def busy_arms(self) -> set[str]:
        """Arms at their own cap, or on a pool at its cap."""
        if self._uncapped:
            return set()
        caps = self.caps
        busy = {a for a, cap in caps.per_arm.items() if self._per_arm[a] >= cap}
        full = {p for p, cap in caps.per_pool.items() if self._per_pool[p] >= cap}
        if full:
            busy.update(a for a, pools in caps.arm_pools.items() if full.intersection(pools))
        return busy

    def all_busy(
        self, arms: Mapping[str, ArmSpec], allowed: Collection[str], exclude: Collection[str]
    ) -> bool:
        """Every enabled arm the task may use is busy (and not excluded for the run):
        it waits for a slot rather than for an arm, and routing is not asked."""
        if self._uncapped:
            return False
        names = [n for n in dict.fromkeys(allowed) if n in arms] if allowed else list(arms)
        enabled = [n for n in names if arms[n].enabled]
        if not enabled:
            return False
        busy = self.busy_arms()
        return all(n in busy and n not in exclude for n in enabled)


@dataclass(frozen=True, slots=True)
class Plan:
    #: Runs to stop, with the reason each is stopped for.
    stops: list[tuple[ActiveRun, str]]
    #: Tasks to start now, most urgent first.
    starts: list[TaskState]
    #: Tasks that could start but for a free slot.
    queued: list[TaskState]


def stop_reason(run: ActiveRun, task: TaskState | None) -> str | None:
    """Why a live run must stop now that desired state moved (None: it may go on)."""
    if run.stop_reason is not None:
        return None
    if task is None or task.removed:
        return "task removed from config"
    if task.spec != run.spec:
        return "task changed in config"
    if not task.spec.enabled:
        return "task disabled"
    if task.phase is TaskPhase.CANCELLED or task.phase is TaskPhase.STOPPED:
        return task.reason
    return None


def _urgency(task: TaskState) -> tuple[int, float]:
    return PRIORITY_ORDER[task.spec.route.priority], task.waiting_since


def plan(
    tasks: Mapping[str, TaskState],
    idle: Iterable[TaskState],
    runs: Mapping[str, ActiveRun],
    now: float,
    caps: Caps,
) -> Plan:
    """What to start and stop: `idle` holds the tasks with no run that are present,
    enabled and unfinished (the table's index); `now` is monotonic time."""
    stops = []
    for run in runs.values():
        why = stop_reason(run, tasks.get(run.task))
        if why is not None:
            stops.append((run, why))
    # Asks only what the index does not already say: is its backoff over,
    # has a schedule fired.
    scheduled = TaskKind.SCHEDULED
    wanted = [
        t
        for t in idle
        if (t.retry_at is None or now >= t.retry_at)
        and (t.pending_fires > 0 or t.spec.kind is not scheduled)
    ]
    free = caps.max_concurrent - len(runs)
    if free >= len(wanted):
        return Plan(stops, sorted(wanted, key=_urgency), [])
    if free <= 0:
        return Plan(stops, [], wanted)
    # Only the first `free` in priority order can start: no need to sort them all.
    starts = heapq.nsmallest(free, wanted, key=_urgency)
    chosen = {id(t) for t in starts}
    return Plan(stops, starts, [t for t in wanted if id(t) not in chosen])
