"""The reconcile loop: the one owner of task and run state.

Contract: reconciliation is level-based. Each pass looks at desired state
(config tasks, submissions, cron fires) and observed state (live runs and
how finished ones ended) and starts or stops runs until they agree. Events
- a run ended, a reload, a submission, a signal - only wake the loop early;
a missed event is caught by the next pass (at most `loop_interval` later).

Only the loop task mutates state, so nothing here takes a lock. Runner tasks
report through one memory stream that the loop drains at the start of every
pass; the loop talks to a runner through that run's own stream (stop
requests); the control socket hands the loop commands (commands.py).

The pieces, each testable alone:

* `table.TaskTable`: desired tasks, their phases, the index of those in
  motion, operator actions;
* `planner.plan`: pure; which runs to start and stop, capacity included;
* `runbook.RunBook`: live runs; starting one (through an injected runner
  factory), and taking in what runners report;
* `settle`: what a finished run means for the router, journal and task;
* this module: wake, run commands, pass, commit the pass's journal batch
  (before any run it recorded may spawn), sleep.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from factoryd.config.model import Config
from factoryd.core.lifecycle import TaskPhase
from factoryd.core.outcome import Outcome
from factoryd.observe.logs import get_logger
from factoryd.observe.metrics import Metrics
from factoryd.proc import fdlimit, process
from factoryd.proc.spawner import Spawner
from factoryd.proc.spawnlog import SpawnLog
from factoryd.reconcile.armsecrets import mark_missing_secrets
from factoryd.reconcile.clocksteps import StepWatch, after_step
from factoryd.reconcile.commands import CommandQueue
from factoryd.reconcile.commits import Commits
from factoryd.reconcile.planner import WAITING_FOR_SLOT, Capacity, Caps, plan
from factoryd.reconcile.runbook import RunBook
from factoryd.reconcile.runstate import ActiveRun, Clock, RunnerFactory, Sweeper, TaskState
from factoryd.reconcile.runtasks import RunTasks
from factoryd.reconcile.strays import StraySweeper
from factoryd.reconcile.table import TaskTable
from factoryd.reconcile.wakeup import Wakeup, sleep_for
from factoryd.routing.engine import RoutingEngine, settings_from_config
from factoryd.run.dirs import MadeDirs
from factoryd.run.launch import kept_workdirs
from factoryd.run.runner import Runner
from factoryd.state import journal as j
from factoryd.state.batch import JournalBatch
from factoryd.state.journal import Journal

__all__ = ["Reconciler"]

#: How long start-up waits for the config's kept task directories (seconds).
DIRS_AHEAD_WAIT = 2.0


class Reconciler:
    """The loop, and the wiring of its pieces: one per daemon, one per state dir.

    `runner_factory` makes each run's runner (the real `Runner` by default)
    and `sweeper` hunts the processes that outlive their runs: tests pass
    fakes of both and drive `reconcile_pass` with a fake clock.
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        base_env: dict[str, str] | None = None,
        journal: Journal | None = None,
        runner_factory: RunnerFactory = Runner,
        sweeper: Sweeper | None = None,
    ) -> None:
        self.config = config
        self.spawn_log = SpawnLog(config.daemon.state_dir / "runs" / "spawns.log")
        self.batch = JournalBatch(journal, self.spawn_log)
        #: Called after every full pass (the systemd watchdog ping lives here).
        self.on_pass: list[Callable[[], None]] = []
        #: Upper bound on one sleep of the loop (set from the watchdog interval).
        self.max_sleep: float | None = None
        #: The descriptor limit the runs get (the daemon's own may be raised above
        #: it; see fdlimit.py). None: whatever the daemon has.
        self.leader_nofile: int | None = None
        #: The start-up config's directories being made (see `_await_dirs_ahead`).
        self._dirs_ahead: threading.Thread | None = None
        self._made_dirs = MadeDirs()
        #: Starts run leaders in a helper process, off the loop (started by `run`).
        self.spawner = Spawner()
        self.spawner.on_gone = self._spawner_gone
        self.spawn_log.busy = lambda: self.spawner.in_flight > 0
        self.engine = RoutingEngine.from_config(config)
        self.metrics = metrics or Metrics()
        self.clock = clock or Clock()
        self.logger = get_logger()
        self.sweeper = sweeper or StraySweeper(self.metrics, self.logger)
        self.table = TaskTable(
            clock=self.clock,
            metrics=self.metrics,
            logger=self.logger,
            batch=self.batch,
            wake=self.wake,
        )
        self.book = RunBook(
            config=config,
            table=self.table,
            engine=self.engine,
            batch=self.batch,
            metrics=self.metrics,
            clock=self.clock,
            rng=rng or random.Random(),  # noqa: S311 - backoff jitter, not crypto
            logger=self.logger,
            spawner=self.spawner,
            spawn_log=self.spawn_log,
            base_env=dict(os.environ if base_env is None else base_env),
            runner_factory=runner_factory,
            made_dirs=self._made_dirs,
            wake=self.wake,
        )
        self._caps = Caps.from_config(config)
        self.fleet: Any = None  # the fleet's hooks (reconcile/fleet.py), only with [fleet]
        self.commands = CommandQueue(self.wake)
        self._wakeup = Wakeup()
        self._tg: TaskGroup | None = None
        self._run_tasks = RunTasks()
        self._commits = Commits(self.flush)
        self._reload: Callable[[], Config] | None = None
        self._pending_reload = False
        self._next_prune = 0.0
        self._steps = StepWatch()
        self.last_pass_wall: float | None = None
        self.last_reload: dict[str, Any] | None = None  # ok, at, errors; None: no reload yet
        self.passes = 0
        self.started = anyio.Event()
        self._adopt_config(config, first=True)

    # -- what other modules read ---------------------------------------------------

    @property
    def tasks(self) -> dict[str, TaskState]:
        return self.table.tasks

    @property
    def runs(self) -> dict[str, ActiveRun]:
        return self.book.runs

    @property
    def stopping(self) -> bool:
        return self.book.stopping

    # -- requests from outside the loop (signals, control socket) -----------

    def wake(self, reason: str) -> None:
        self._wakeup(reason)

    def request_reload(self, loader: Callable[[], Config]) -> None:
        self._reload = loader
        self._pending_reload = True
        self.wake("reload")

    async def run_in_loop(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` inside the loop, between passes, and return what it returns."""
        return await self.commands.call(fn, timeout)

    def request_stop(self) -> None:
        self.book.stopping = True
        self.wake("shutdown")

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile until asked to stop, then stop every run and return."""
        if self.spawner.pid is None and self.spawner.failed is None:
            self.spawner.start(self.leader_nofile)
            if self.spawner.failed:
                self.logger.warning("spawner.unavailable", reason=self.spawner.failed)
        await self._await_dirs_ahead()
        try:
            await self._loop()
        finally:
            self.spawner.close()

    async def _await_dirs_ahead(self) -> None:
        """Start-up prepares before it serves: the start-up config's kept task
        directories are made before the first pass (off the loop, for at most
        DIRS_AHEAD_WAIT), so that the first burst of runs does not share the
        disk and the CPU with hundreds of mkdirs (each a new inode; 0.03 to
        0.6 ms on this kind of host). Past the bound the rest are made while
        runs start, and a start that comes first makes its own."""
        thread, self._dirs_ahead = self._dirs_ahead, None
        if thread is None:
            return
        await anyio.to_thread.run_sync(thread.join, DIRS_AHEAD_WAIT)
        if thread.is_alive():
            self.logger.info(
                "dirs.slow",
                waited=DIRS_AHEAD_WAIT,
                note="kept task directories are still being made; runs start meanwhile",
            )

    def _spawner_gone(self, leaders: list[int]) -> None:
        """The helper died: its running leaders are our children now, so the sweeps
        must take them for leaders (not orphans to reap); spawns use Popen."""
        process.LEADERS.update(leaders)
        if self.spawner.failed != "closed":
            self.logger.warning(
                "spawner.gone",
                reason=self.spawner.failed,
                leaders=len(leaders),
                fallback="popen",
            )

    def _start_launched(self) -> None:
        """Give each run registered since the last call its runner task."""
        launched, self.book.launched = self.book.launched, []
        assert self._tg is not None
        for run in launched:
            self._run_tasks.start(self.book.execute(run))
        for read in self.book.prompts.start_queued():
            self._tg.start_soon(self.book.prompts.read, *read)

    async def flush(self) -> None:
        """Commit the pass's journal batch; the runs it recorded may then spawn."""
        await self.batch.flush(
            self.clock.wall(),
            task_op=self.table.journal_op,
            ledger=self.engine.ledger,
            soft_state=self._soft_state,
            log=self.logger,
        )

    def _soft_state(self, now: float) -> dict[str, Any]:
        snap = self.engine.snapshot(now)
        return {"version": snap["version"], "arms": snap["arms"], "quality": snap["quality"]}

    async def _loop(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._run_tasks.on_failure = tg.cancel_scope.cancel
            tg.start_soon(self._commits.run)
            try:
                await self._passes()
            finally:
                await self._run_tasks.close()
            tg.cancel_scope.cancel()
        self._run_tasks.raise_failures()

    async def _passes(self) -> None:
        self._start_launched()  # runs recovery adopted before the loop
        while True:
            reasons = self._wakeup.take()
            if "interval" in reasons or "reload" in reasons or self.passes == 0:
                # Level-based to the end: the index is rebuilt from scratch now
                # and then, so a change it missed cannot outlive one interval.
                self.table.reindex()
            t0 = time.perf_counter()
            self.reconcile_pass()
            self._start_launched()
            self.metrics.pass_observer.observe(time.perf_counter() - t0)
            self._commits.want()  # behind the loop: see commits.py
            for hook in self.on_pass:
                hook()
            for reason in reasons:
                self.metrics.child(self.metrics.passes, reason).inc()
            self.passes += 1
            self.last_pass_wall = self.clock.wall()
            self.metrics.last_pass.set(self.last_pass_wall)
            if not self.started.is_set():
                self.started.set()
            if self.stopping and not self.runs:
                await self._commits.settled()
                break
            await self._sleep()

    async def _sleep(self) -> None:
        if self._wakeup.pending:
            return
        now_m, now_w = self.clock.mono(), self.clock.wall()
        delay = sleep_for(self.table, self.config.daemon.loop_interval, now_m, now_w)
        if self.runs:
            delay = min(delay, max(self.sweeper.next_due - now_m, 0.0) + 0.001)
        lapse = self.fleet.queue.next_deadline() if self.fleet and self.fleet.queue else None
        delay = max(min(delay, lapse - now_m + 0.001) if lapse else delay, 0.0)
        if self.max_sleep is not None:
            delay = min(delay, self.max_sleep)
        await self._wakeup.sleep(delay)

    def reconcile_pass(self) -> None:
        """One pass: take in reports and commands, then start and stop runs until
        observed state agrees with desired state."""
        now_m, now_w = self.clock.mono(), self.clock.wall()
        book, table = self.book, self.table
        book.drain(now_m, now_w)
        step = self._steps.observe(now_m, now_w)
        if step is not None:
            after_step(self.table, step, now_w, self.logger)
            self._next_prune = min(self._next_prune, now_w + 3600.0)
        self.commands.run_all()
        if self._pending_reload:
            self._pending_reload = False
            self._do_reload()
        if self.stopping:
            for run in self.runs.values():
                book.stop(run, Outcome.CANCELLED, "daemon shutting down")
            return
        table.fire_schedules(now_w)
        todo = plan(table.tasks, table.idle.values(), self.runs, now_m, self._caps)
        for run, why in todo.stops:
            book.stop(run, Outcome.CANCELLED, why)
        if todo.starts:
            if self.fleet is not None:  # the router sees the fleet's pools
                self.fleet.before_starts(self.engine)
            capacity = Capacity(self._caps, self.runs.values())
            for rt in todo.starts:
                book.start(rt, capacity, now_m, now_w)
        pending = TaskPhase.PENDING
        for rt in todo.queued:
            if rt.reason is not WAITING_FOR_SLOT or rt.phase is not pending:
                table.set_phase(rt, pending, WAITING_FOR_SLOT)
        table.forget_finished_submissions()
        if table.check_index:
            table.verify_index()
        self.sweeper.sweep(self.runs, now_m)
        if now_w >= self._next_prune:
            self._next_prune = now_w + 3600.0
            self.batch.op(j.op_prune(now_w - self.config.daemon.retain_runs))

    # -- reload -----------------------------------------------------------------

    def _adopt_config(self, config: Config, *, first: bool = False) -> None:
        count = self.table.adopt_config_tasks(config.tasks)
        self.metrics.prepare_tasks(t.name for t in config.tasks)
        mark_missing_secrets(self.engine, config, self.book.base_env, self.logger)
        short = fdlimit.shortfall(config.daemon.max_concurrent)
        if short is not None:
            self.logger.warning("limits.nofile", reason=short)
        dirs = self._made_dirs.make_ahead(kept_workdirs(config))
        if first:
            self._dirs_ahead = dirs
        else:
            self.logger.info("config.applied", tasks=count)

    def reload_now(self, loader: Callable[[], Config]) -> dict[str, Any]:
        """Reload now, as SIGHUP does (a socket command, in the loop); the result."""
        self._reload = loader
        self._do_reload()
        return self.last_reload or {}

    def _do_reload(self) -> None:
        assert self._reload is not None
        try:
            config = self._reload()
        except Exception as exc:
            problems = getattr(exc, "problems", None)
            errors = [str(p) for p in problems] if problems else [str(exc) or repr(exc)]
            self.logger.error("config.reload_failed", errors=errors, note="keeping the running one")
        else:
            self.apply_config(config)
            errors = []
        ok = not errors
        self.metrics.config_reloads.labels("success" if ok else "error").inc()
        self.metrics.config_reload_ok.set(int(ok))
        self.last_reload = {"ok": ok, "at": self.clock.wall(), "errors": errors}

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.book.config = config
        self._caps = Caps.from_config(config)
        self.engine.reconfigure(settings_from_config(config))
        self._adopt_config(config)

    # -- counts and health ------------------------------------------------------------

    def healthy(self, max_age: float) -> tuple[bool, str]:
        if self.last_pass_wall is None:
            return False, "no reconcile pass yet"
        age = self.clock.wall() - self.last_pass_wall
        if age > max_age:
            return False, f"last reconcile pass {age:.1f}s ago (max {max_age:.0f}s)"
        return True, f"ok: last pass {age:.2f}s ago, {len(self.runs)} run(s)"
