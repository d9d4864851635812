"""The run book: every live run, how one starts, and what happens when it ends.

Starting (`start`): route the task (unless every arm it may use is at its
cap, or its prompt file is still being read off the loop: prompts.py),
prepare the run's argv, env and files, record the intent in the pass's
journal batch, and make its runner through the injected factory; it waits
at its start gate until the batch is committed: never before it is durable.

Ending: a runner reports its pid and its result through one memory stream
that the loop drains (`drain`); `finish` settles the run (settle.py) and
applies the task's verdict to the task table.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from logging import DEBUG
from pathlib import Path

import anyio
from structlog.typing import FilteringBoundLogger

from factoryd.config.model import Config
from factoryd.core.lifecycle import TaskPhase, attempts_left, exclusions_after
from factoryd.core.outcome import Outcome, RunResult, StopRequest
from factoryd.observe.metrics import Metrics
from factoryd.proc.spawner import Spawner
from factoryd.proc.spawnlog import SpawnLog
from factoryd.reconcile.planner import ARMS_AT_CAP, Capacity
from factoryd.reconcile.prompts import PromptReads
from factoryd.reconcile.runstate import (
    ActiveRun,
    Clock,
    RunEnded,
    RunnerFactory,
    TaskState,
)
from factoryd.reconcile.settle import judge, settle_run, settle_unstarted
from factoryd.reconcile.table import TaskTable
from factoryd.reconcile.worktrees import RunWorktrees
from factoryd.routing.decision import Decision
from factoryd.routing.engine import RoutingEngine
from factoryd.run.dirs import MadeDirs
from factoryd.run.launch import LaunchError, build_run, new_run_id, remove_run_dir
from factoryd.run.runspec import Adoption, Gate, RunSpec
from factoryd.state.batch import JournalBatch
from factoryd.units.timefmt import iso as _iso


class RunBook:
    def __init__(
        self,
        *,
        config: Config,
        table: TaskTable,
        engine: RoutingEngine,
        batch: JournalBatch,
        metrics: Metrics,
        clock: Clock,
        rng: random.Random,
        logger: FilteringBoundLogger,
        spawner: Spawner,
        spawn_log: SpawnLog,
        base_env: dict[str, str],
        runner_factory: RunnerFactory,
        made_dirs: MadeDirs,
        wake: Callable[[str], None],
    ) -> None:
        self.config = config
        self.table = table
        self.engine = engine
        self.batch = batch
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.logger = logger
        self.spawner, self.spawn_log, self.base_env = spawner, spawn_log, base_env
        self.runner_factory = runner_factory
        self.made_dirs = made_dirs
        self.wake = wake
        self.runs: dict[str, ActiveRun] = {}
        #: Runs registered but whose runner task the loop has not started yet.
        self.launched: list[ActiveRun] = []
        #: Set while the daemon shuts down: a cancelled run is then no verdict.
        self.stopping = False
        self.held_back: Callable[[TaskState], bool] = lambda _rt: False  # fleet: waits, unblocked
        #: One thread removes run directories: a burst of exits must not grow a pool.
        self._cleanup_limiter = anyio.CapacityLimiter(1)
        self.prompts = PromptReads(table, rng, logger, wake)
        self.worktrees = RunWorktrees(config.daemon.state_dir / "workspace-records", clock)
        self._reports: deque[RunEnded] = deque()  # runners' results, for `drain`

    # -- starting -----------------------------------------------------------------

    def start(self, rt: TaskState, capacity: Capacity, now_m: float, now_w: float) -> None:
        """Route one task and launch its run (or say why it cannot start)."""
        spec = rt.spec
        if capacity.all_busy(self.engine.arms, spec.route.arms, rt.exclude):
            rt.exclude.clear()
            if rt.reason != ARMS_AT_CAP:
                self.table.set_phase(rt, TaskPhase.PENDING, ARMS_AT_CAP)
            return
        if not (got := self.prompts.ready(rt, self.config, now_m, now_w)).ready:
            return
        ttl = None if spec.timeout is None else spec.timeout + spec.stop_grace + 60.0
        t0, busy = time.perf_counter(), capacity.busy_arms()
        req = spec.route.with_attempts_left(attempts_left(spec, rt.book, now_m))
        decision = self.engine.route(req, now_w, exclude=rt.exclude, busy=busy, ttl=ttl)
        if decision.arm is None and rt.exclude:  # every arm it may use failed in turn: over again
            rt.exclude.clear()
            decision = self.engine.route(req, now_w, busy=busy, ttl=ttl)
        self.metrics.decision(decision, time.perf_counter() - t0)
        if decision.arm is None:
            rt.exclude.clear()
            rt.retry_at = now_m + self.config.daemon.loop_interval
            if self.held_back(rt):
                return
            if rt.phase is not TaskPhase.BLOCKED or rt.reason != decision.rationale():
                self.logger.warning("route.none", task=rt.name, rationale=decision.rationale())
                self.table.set_phase(rt, TaskPhase.BLOCKED, decision.rationale())
            return
        arm = self.engine.arms[decision.arm]
        run_id = new_run_id(now_w)
        self.logger.info(
            "route.decision",
            task=rt.name,
            run_id=run_id,
            arm=arm.name,
            pools=list(arm.pools),
            strategy=decision.strategy,
            degraded=decision.degraded,
            score=decision.score,
            rejected=len(decision.rejections),
            **({"rationale": decision.rationale()} if self.logger.is_enabled_for(DEBUG) else {}),
        )
        try:
            built = build_run(
                self.config,
                spec,
                arm,
                run_id,
                self.base_env,
                self.spawn_log,
                keep_workdir=rt.source == "config",
                made=self.made_dirs,
                prompt=got.prompt,
            )
        except LaunchError as exc:
            settle_unstarted(self.engine, decision, str(spec.route.type), now_w)
            failed = RunResult(run_id, Outcome.SPAWN_FAILED, str(exc), started_ok=False)
            self.metrics.spawn_failures.labels(rt.label, arm.name).inc()
            self.logger.error(
                "run.finished",
                task=rt.name,
                run_id=run_id,
                arm=arm.name,
                pools=list(arm.pools),
                outcome=str(Outcome.SPAWN_FAILED),
                stage="prepare",
                reason=str(exc),
            )
            remove_run_dir(self.config.daemon.state_dir / "runs" / run_id)
            self.table.apply_verdict(rt, judge(rt, failed, now_m, self.rng), set(), now_m)
            return
        capacity.take(arm.name, arm.pools)
        gate = self.batch.run_intent(
            run_id, rt.name, arm.name, now_w, decision.reservation, str(built.log_path)
        )
        run = self._launch(
            rt, decision, built.spec, built.run_dir, built.log_path, now_m, now_w, gate=gate
        )
        run.workspace, run.hook_env = built.workspace, built.hook_env

    def _launch(
        self,
        rt: TaskState | None,
        decision: Decision,
        spec: RunSpec,
        run_dir: Path | None,
        log_path: Path | None,
        started_mono: float,
        started_wall: float,
        *,
        gate: Gate | None = None,
        adoption: Adoption | None = None,
    ) -> ActiveRun:
        """Register a run and make its runner (fresh or adopted)."""
        run_id = spec.run_id

        def started(pid: int, fds: tuple[int, int] | None, create_time: float | None) -> None:
            # Taken in at once, not by the next pass: `run.started` is told the
            # moment the helper answers, and the pid's journal record rides on
            # the next flush (the helper's spawn-log line, written before its
            # answer, is the durable record of the spawn until then).
            run = self.runs.get(run_id)
            if run is not None:
                self.batch.run_started(run_id, pid, create_time, fds)
                run.pid = pid
                if run.state == "starting":
                    run.state = "running"
                run.logger.info("run.started", pid=pid)

        runner = self.runner_factory(
            spec,
            on_started=started,
            clock=self.clock.mono,
            gate=gate,
            adoption=adoption,
            spawner=self.spawner,
        )
        arm = self.engine.arms.get(spec.arm)
        run = ActiveRun(
            run_id=run_id,
            task=spec.task,
            spec=rt.spec if rt else None,
            arm=spec.arm,
            cli=spec.cli,
            pools=arm.pools if arm else (),
            decision=decision,
            runner=runner,
            started_mono=started_mono,
            started_wall=started_wall,
            run_dir=run_dir,
            log_path=log_path,
            parent_logger=self.logger,
        )
        if adoption is not None:
            run.pid, run.state = adoption.pid, "running"
        self.runs[run_id] = run
        if rt is not None:
            rt.run = run_id
            rt.last_arm = spec.arm
            rt.last_log = None if log_path is None else str(log_path)
            rt.retry_at = None
            if adoption is None:
                rt.runs += 1
                self.metrics.runs_started.add((rt.label, spec.arm))
            self.table.set_phase(
                rt,
                TaskPhase.RUNNING,
                f"run {run_id} on {spec.arm}" + (" (adopted)" if adoption else ""),
            )
        self.launched.append(run)
        return run

    def adopt_run(
        self,
        rt: TaskState | None,
        decision: Decision,
        spec: RunSpec,
        adoption: Adoption,
        started_wall: float,
    ) -> ActiveRun:
        """Watch a run a previous daemon started (called by recovery before the loop)."""
        log, started = spec.log.path, adoption.started
        return self._launch(rt, decision, spec, None, log, started, started_wall, adoption=adoption)

    def settle_vanished(
        self,
        rt: TaskState | None,
        decision: Decision,
        run_id: str,
        outcome: Outcome,
        reason: str,
        *,
        ran: bool,
    ) -> None:
        """A run the journal thought live has no process: account for it, let policy decide.

        `ran`: its process did start (it is charged its estimate); else it is rolled back.
        """
        now_m = self.clock.mono()
        run = ActiveRun(
            run_id=run_id,
            task=decision.task,
            spec=rt.spec if rt else None,
            arm=decision.arm or "",
            cli=getattr(self.engine.arms.get(decision.arm or ""), "cli", "unknown"),
            pools=tuple(decision.charges),
            decision=decision,
            runner=None,
            started_mono=now_m,
            started_wall=decision.at,
            parent_logger=self.logger,
        )
        self.runs[run_id] = run
        if rt is not None:
            rt.run = run_id
        result = RunResult(run_id, outcome, reason, started_ok=ran)
        self.finish(run, result, now_m, self.clock.wall())

    async def execute(self, run: ActiveRun) -> None:
        """The body of a run's task: run it to its end, then report the result."""
        assert run.runner is not None
        made, result = await self.worktrees.before(run)
        if result is None:
            try:
                result = await run.runner.run()
            except Exception as exc:  # a bug in a runner must not take the daemon down
                run.logger.exception("run.internal_error")
                why, now = f"internal error: {exc!r}", self.clock.mono()
                result = RunResult(
                    run.run_id, Outcome.FAILED, why, started=run.started_mono, ended=now
                )
        if made:
            await self.worktrees.after(run, result)
        if run.run_dir is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    remove_run_dir, run.run_dir, limiter=self._cleanup_limiter
                )
        self._reports.append(RunEnded(run.run_id, result))
        self.wake("exit")

    def stop(self, run: ActiveRun, outcome: Outcome, reason: str) -> None:
        if run.stop_reason is not None:
            return
        run.stop_reason = reason
        run.state = "stopping"
        run.logger.info("run.stopping", reason=reason)
        if run.runner is not None:
            run.runner.request_stop(StopRequest(outcome, reason))

    def drain(self, now_m: float, now_w: float) -> None:
        """Take in the results runners reported since the last pass."""
        reports = self._reports
        while reports:
            msg = reports.popleft()
            run = self.runs.get(msg.run_id)
            if run is not None:
                self.finish(run, msg.result, now_m, now_w)

    def finish(self, run: ActiveRun, result: RunResult, now_m: float, now_w: float) -> None:
        """Settle a run that ended and apply its task's verdict."""
        del self.runs[run.run_id]
        spec = run.spec
        rt = self.table.tasks.get(run.task)
        label = rt.label if rt is not None else run.task
        task_type = str(spec.route.type) if spec else "generation"
        settled = settle_run(self.engine, run, result, task_type, now_w)
        self.batch.run_ended(settled.journal_op)
        self.metrics.run_finished(label, run.arm, run.cli, result)
        if settled.usage is not None:
            self.metrics.usage(run.arm, settled.usage, settled.cost)
        if settled.limit_until is not None and result.limit is not None:
            self.metrics.limit(run.arm, run.pools, result.limit)
            run.logger.warning(
                "limit.hit",
                until=_iso(settled.limit_until),
                raw=result.limit.text,
                status=result.limit.status,
            )
        run.logger.info(
            "run.finished",
            outcome=str(result.outcome),
            reason=result.reason,
            exit_status=result.exit_status,
            duration=round(result.duration, 3),
            tokens=settled.usage.total_tokens if settled.usage else None,
            cost=settled.cost,
            log=str(run.log_path) if result.log_kept else None,
            log_error=result.log_error,
            bytes_dropped=result.bytes_dropped,
            sigkilled=result.sigkilled,
            orphans_killed=result.orphans_killed,
            hold_expired=settled.settlement.hold_had_expired,
            **(result.workspace or {}),
        )
        if rt is None:
            return
        rt.run = None
        rt.last_outcome = str(result.outcome)
        self.table.index(rt)
        if self.stopping and result.outcome is Outcome.CANCELLED:
            # Stopped with the daemon: not a verdict on the task, which resumes
            # at the next start (its run is recorded as cancelled).
            self.table.set_phase(rt, TaskPhase.PENDING, "stopped with the daemon")
            return
        if rt.removed:
            self.table.forget(rt)
            return
        if run.spec is not None and rt.spec != spec:
            return  # the new spec starts on the next pass
        if rt.phase is TaskPhase.CANCELLED or rt.phase is TaskPhase.STOPPED:
            return
        if run.restart:  # `factoryd restart`: no verdict, no backoff, no restart counted
            return self.table.restarted(rt)
        exclude = exclusions_after(
            rt.exclude, result.outcome, run.arm, allowed=rt.spec.route.arms, arms=self.engine.arms
        )
        self.table.apply_verdict(rt, judge(rt, result, now_m, self.rng), exclude, now_m)

    def run_states(self) -> dict[str, int]:
        counts = {"starting": 0, "running": 0, "stopping": 0}
        for run in self.runs.values():
            counts[run.state] += 1
        return counts
