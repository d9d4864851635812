"""The task table: every desired task, its phase, and the index of those in motion.

Desired state enters here (config tasks on start and reload, durable
submissions, cron fires) and so do operator actions (cancel, reset). Every
phase change goes through `set_phase`, which keeps the index in step and
marks the task for the pass's journal batch.

The index lets a pass cost what is in motion, not what exists: `idle`
holds tasks with no run that are present, enabled and unfinished; `cron`
the scheduled tasks; `settled` submissions that reached a final phase (to
be forgotten). `reindex` rebuilds it from scratch (the loop does so every
interval: a change it missed cannot outlive one), and with
FACTORYD_CHECK_INDEX=1 every pass proves the index equals a full scan.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from structlog.typing import FilteringBoundLogger

from factoryd.core.lifecycle import TERMINAL, RestartBook, TaskPhase, Verdict
from factoryd.core.schedule import catch_up, next_fire
from factoryd.core.taskspec import TaskKind, TaskSpec
from factoryd.observe.metrics import Metrics
from factoryd.reconcile.runstate import Clock, TaskState
from factoryd.state import journal as j
from factoryd.state.batch import JournalBatch, spec_digest
from factoryd.units.timefmt import iso as _iso

#: The reason of a task the operator stopped.
HELD = "stopped by operator (until `factoryd start`)"


class TaskTable:
    def __init__(
        self,
        *,
        clock: Clock,
        metrics: Metrics,
        logger: FilteringBoundLogger,
        batch: JournalBatch,
        wake: Callable[[str], None],
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
        self.batch = batch
        self.wake = wake
        self.tasks: dict[str, TaskState] = {}
        self.idle: dict[str, TaskState] = {}
        self.cron: dict[str, TaskState] = {}
        self.settled: set[str] = set()
        self.check_index = os.environ.get("FACTORYD_CHECK_INDEX") == "1"
        #: Tasks the operator stopped (`factoryd stop`): kept in the journal.
        self.held: set[str] = set()
        #: Finished submissions, newest last, for `status` (bounded).
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)

    # -- the index ------------------------------------------------------------

    def _in_motion(self, rt: TaskState) -> bool:
        return (
            rt.run is None
            and not rt.removed
            and rt.spec.enabled
            and rt.phase not in TERMINAL
            and rt.phase is not TaskPhase.STOPPED
            and self.tasks.get(rt.name) is rt
        )

    def index(self, rt: TaskState) -> None:
        """Bring the index in step with one task after something about it changed."""
        name = rt.name
        if self._in_motion(rt):
            self.idle[name] = rt
        elif self.idle.get(name) is rt:
            del self.idle[name]
        if rt.spec.kind is TaskKind.SCHEDULED and self.tasks.get(name) is rt:
            self.cron[name] = rt
        elif self.cron.get(name) is rt:
            del self.cron[name]
        if rt.source == "submitted" and rt.phase in TERMINAL:
            self.settled.add(name)

    def forget(self, rt: TaskState) -> None:
        del self.tasks[rt.name]
        self.idle.pop(rt.name, None)
        self.cron.pop(rt.name, None)
        self.settled.discard(rt.name)

    def reindex(self) -> None:
        self.idle, self.cron, self.settled = {}, {}, set()
        for rt in self.tasks.values():
            self.index(rt)

    def verify_index(self) -> None:
        idle, cron, settled = self.idle, self.cron, self.settled
        self.reindex()
        assert idle.keys() == self.idle.keys(), ("idle", idle.keys() ^ self.idle.keys())
        assert cron.keys() == self.cron.keys(), ("cron", cron.keys() ^ self.cron.keys())
        assert settled >= self.settled, ("settled", self.settled - settled)

    def set_phase(self, rt: TaskState, phase: TaskPhase, reason: str) -> None:
        old = rt.phase
        rt.phase, rt.reason = phase, reason
        self.index(rt)
        self.batch.task(rt.name)
        if old is not phase:
            # The happy path (a run starts; it succeeds) is already told by
            # route.decision, run.started and run.finished: one line per fact.
            quiet = phase is TaskPhase.RUNNING or (
                old is TaskPhase.RUNNING and phase is TaskPhase.SUCCEEDED
            )
            log = self.logger.debug if quiet else self.logger.info
            log("task.phase", task=rt.name, old=str(old), new=str(phase), reason=reason)

    def journal_op(self, name: str, now: float) -> j.Op | None:
        """The journal record of one task's progress (None: it left the table)."""
        rt = self.tasks.get(name)
        if rt is None:
            return None
        return j.op_task_state(
            rt.name,
            str(rt.phase),
            rt.reason,
            rt.runs,
            rt.restarts,
            rt.last_fire,
            rt.pending_fires,
            now,
            spec_digest(rt.spec),
        )

    # -- desired state ----------------------------------------------------------

    def adopt_config_tasks(self, specs: Iterable[TaskSpec]) -> int:
        """Make the table's config tasks the given ones; return how many there are."""
        now_w = self.clock.wall()
        wanted = {t.name: t for t in specs}
        for name, old in self.tasks.items():
            if old.source == "config" and name not in wanted and not old.removed:
                old.removed = True
                self.set_phase(old, TaskPhase.CANCELLED, "removed from config")
        for name, spec in wanted.items():
            found = self.tasks.get(name)
            if found is None or (found.removed and found.run is None):
                rt = self.tasks[name] = TaskState(spec=spec, label=name)
                rt.waiting_since = self.clock.mono()
                self.index(rt)
                self._init_phase(rt, now_w)
            elif found.spec != spec:
                rt = found
                rt.spec = spec
                self.index(rt)
                rt.removed = False
                rt.book = RestartBook.empty()
                rt.retry_at = None
                rt.exclude.clear()
                self._init_phase(rt, now_w, "config changed")
        return len(wanted)

    def _init_phase(self, rt: TaskState, now_w: float, reason: str = "new") -> None:
        spec = rt.spec
        rt.pending_fires = 0
        rt.next_fire = None
        if rt.name in self.held:
            self.set_phase(rt, TaskPhase.STOPPED, HELD)
        elif not spec.enabled:
            self.set_phase(rt, TaskPhase.DISABLED, "disabled in config")
        elif spec.kind is TaskKind.SCHEDULED and spec.schedule:
            rt.next_fire = next_fire(spec.schedule, spec.timezone, now_w)
            self.set_phase(rt, TaskPhase.WAITING, f"{reason}; next fire at {_iso(rt.next_fire)}")
        else:
            self.set_phase(rt, TaskPhase.PENDING, reason)

    def restore_schedule(self, name: str, last_fire: float) -> None:
        """After a restart: apply the task's missed-fire policy since `last_fire`."""
        rt = self.tasks.get(name)
        if rt is None or rt.spec.schedule is None:
            return
        now_w = self.clock.wall()
        plan = catch_up(
            rt.spec.schedule, rt.spec.timezone, last_fire, now_w, rt.spec.missed, rt.spec.missed_cap
        )
        rt.last_fire = last_fire
        rt.next_fire = plan.next_fire
        if plan.missed:
            rt.pending_fires += plan.runs
            self.metrics.cron_fires.labels(rt.label, "missed").inc(plan.missed)
            self.logger.info(
                "cron.missed",
                task=rt.name,
                missed=plan.missed,
                runs=plan.runs,
                decision=plan.decision,
            )
            if plan.runs:
                self.set_phase(rt, TaskPhase.PENDING, plan.decision)

    def fire_schedules(self, now_w: float) -> None:
        for rt in list(self.cron.values()):
            if rt.next_fire is None or now_w < rt.next_fire or rt.removed:
                continue
            spec = rt.spec
            assert spec.schedule is not None
            rt.last_fire = rt.next_fire
            rt.next_fire = next_fire(spec.schedule, spec.timezone, now_w)
            if rt.pending_fires >= spec.missed_cap:
                self.metrics.cron_fires.labels(rt.label, "over_cap").inc()
                self.logger.warning(
                    "cron.over_cap", task=rt.name, pending=rt.pending_fires, cap=spec.missed_cap
                )
                continue
            rt.pending_fires += 1
            self.metrics.cron_fires.labels(rt.label, "queued").inc()
            self.logger.info(
                "cron.fire", task=rt.name, pending=rt.pending_fires, next_fire=_iso(rt.next_fire)
            )
            if rt.phase is TaskPhase.WAITING:
                self.set_phase(rt, TaskPhase.PENDING, f"cron fire at {_iso(rt.last_fire)}")

    def apply_verdict(
        self, rt: TaskState, verdict: Verdict, exclude: set[str], now_m: float
    ) -> None:
        """A run of `rt` ended and policy judged: record the next phase.

        `exclude`: the arms its next run must not use (`exclusions_after`).
        """
        rt.exclude = exclude
        if verdict.counts_restart:
            rt.restarts += 1
            self.metrics.child(self.metrics.restarts, rt.label).inc()
        if verdict.phase is TaskPhase.GAVE_UP:
            self.metrics.give_ups.labels(rt.label).inc()
        rt.retry_at = verdict.retry_at
        rt.waiting_since = now_m
        phase, reason = verdict.phase, verdict.reason
        if rt.spec.kind is TaskKind.SCHEDULED and phase is TaskPhase.WAITING:
            rt.pending_fires = max(0, rt.pending_fires - 1)
            if rt.pending_fires:
                phase, reason = TaskPhase.PENDING, f"{reason}; {rt.pending_fires} fire(s) queued"
        self.set_phase(rt, phase, reason)

    # -- submissions and operator actions -----------------------------------------

    def add_submission(self, spec: TaskSpec, label: str) -> TaskState:
        """A durable submission enters desired state (already in the journal)."""
        rt = self.tasks.get(spec.name)
        if rt is not None:
            return rt
        rt = self.tasks[spec.name] = TaskState(spec=spec, label=label, source="submitted")
        rt.waiting_since = self.clock.mono()
        self.index(rt)
        self._init_phase(rt, self.clock.wall(), "submitted")
        self.wake("submit")
        return rt

    def cancel(self, name: str, reason: str = "cancelled by operator") -> bool:
        rt = self.tasks.get(name)
        if rt is None:
            return False
        rt.retry_at = None
        rt.pending_fires = 0
        self.set_phase(rt, TaskPhase.CANCELLED, reason)
        self.wake("cancel")
        return True

    def reset(self, name: str) -> bool:
        """Take a task out of gave_up/failed/cancelled and let it run again."""
        rt = self.tasks.get(name)
        if rt is None:
            return False
        rt.book = RestartBook.empty()
        rt.retry_at = None
        rt.exclude.clear()
        self._init_phase(rt, self.clock.wall(), "reset by operator")
        self.wake("reset")
        return True

    def restarted(self, rt: TaskState) -> None:
        """Its run was stopped by `factoryd restart`: start again now."""
        rt.retry_at = None
        if rt.spec.kind is TaskKind.SCHEDULED:
            rt.pending_fires = max(rt.pending_fires, 1)
        self.set_phase(rt, TaskPhase.PENDING, "restarted by operator")
        self.wake("command")

    def forget_finished_submissions(self) -> None:
        """Done submissions leave memory (the journal keeps them until retention)."""
        if not self.settled:
            return
        done = []
        for name in list(self.settled):
            rt = self.tasks.get(name)
            if rt is None or rt.phase not in TERMINAL:
                self.settled.discard(name)
            elif rt.run is None:
                done.append(rt)
        now = self.clock.wall()
        for rt in done:
            self.batch.op(j.op_submission_state(rt.name, str(rt.phase), rt.reason, now))
            self.recent.append(
                {
                    "id": rt.name,
                    "label": rt.label,
                    "phase": str(rt.phase),
                    "reason": rt.reason,
                    "runs": rt.runs,
                    "at": now,
                }
            )
            self.forget(rt)

    # -- counts for metrics -------------------------------------------------------

    def phase_counts(self) -> dict[str, int]:
        counts = {str(p): 0 for p in TaskPhase}
        for rt in self.tasks.values():
            counts[str(rt.phase)] += 1
        return counts

    def blocked_by_label(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rt in self.tasks.values():
            counts[rt.label] = counts.get(rt.label, 0) + (rt.phase is TaskPhase.BLOCKED)
        return counts
