"""The reconcile loop: the one owner of task and run state.

Contract: reconciliation is level-based. Each pass looks at desired state
(config tasks, submissions, cron fires) and observed state (live runs and
how finished ones ended) and starts or stops runs until they agree. Events
- a run ended, a reload, a submission, a signal - only wake the loop early;
a missed event is caught by the next pass (at most `loop_interval` later).

Only the loop task mutates state. Runner tasks report through one memory
stream that the loop drains at the start of every pass; the loop talks to
a runner through that run's own stream (stop requests).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import random
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from factoryd.config.loader import Config
from factoryd.core.lifecycle import (
    TERMINAL,
    RestartBook,
    TaskPhase,
    Verdict,
    after_exit,
    exclusions_after,
)
from factoryd.core.outcome import Outcome, RunResult, StopRequest, teaches_router
from factoryd.core.schedule import catch_up, next_fire
from factoryd.core.taskspec import TaskKind, TaskSpec
from factoryd.observe.logs import get_logger
from factoryd.observe.metrics import Metrics
from factoryd.proc import fdlimit, process
from factoryd.proc.spawner import Spawner
from factoryd.proc.spawnlog import SpawnLog
from factoryd.reconcile.runstate import ActiveRun, Clock, TaskRuntime
from factoryd.reconcile.strays import reap_strays, track_descendants
from factoryd.routing.decision import Decision
from factoryd.routing.engine import RoutingEngine, Settlement, settings_from_config
from factoryd.routing.model import Priority, Usage
from factoryd.run.dirs import make_ahead
from factoryd.run.launch import LaunchError, kept_workdirs, new_run_id, prepare, remove_run_dir
from factoryd.run.runner import Adoption, Gate, Runner, RunSpec
from factoryd.state import journal as j
from factoryd.state.journal import Journal
from factoryd.state.persist import Store, plain
from factoryd.units.timefmt import iso as _iso

#: Seconds between scans for escaped descendants and orphans while runs live.
SCAN_INTERVAL = 5.0
#: Seconds between full /proc scans that remember each run's descendants. A
#: full scan reads every process's stat file: at 5 s it was most of the idle
#: CPU; stop-time snapshots and the subreaper cover what happens in between.
TRACK_INTERVAL = 60.0
#: How long start-up waits for the config's kept task directories (seconds).
DIRS_AHEAD_WAIT = 2.0
#: The reason of a task that could start but for a free slot (one object, so
#: that a pass tells it by identity).
WAITING_FOR_SLOT = "waiting for a free slot"
PRIORITY_ORDER = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


@dataclass(frozen=True, slots=True)
class _Ended:
    run_id: str
    result: RunResult


@dataclass(frozen=True, slots=True)
class _Started:
    run_id: str
    pid: int
    leader_fds: tuple[int, int] | None = None
    create_time: float | None = None


class Reconciler:
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        base_env: dict[str, str] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self.spawn_log = SpawnLog(config.daemon.state_dir / "runs" / "spawns.log")
        self.store = Store(journal, self.spawn_log)
        #: Called after every full pass (the systemd watchdog ping lives here).
        self.on_pass: list[Callable[[], None]] = []
        #: Upper bound on one sleep of the loop (set from the watchdog interval).
        self.max_sleep: float | None = None
        #: Finished submissions, newest last, for `status` (bounded).
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)
        self._next_prune = 0.0
        self._deferred: list[ActiveRun] = []
        #: One thread removes run directories: a burst of exits must not grow
        #: a pool of idle threads (each costs memory and a /proc entry).
        self._cleanup_limiter = anyio.CapacityLimiter(1)
        #: The descriptor limit the runs get (the daemon's own may be raised above
        #: it; see fdlimit.py). None: whatever the daemon has.
        self.leader_nofile: int | None = None
        #: The start-up config's directories being made (see `_await_dirs_ahead`).
        self._dirs_ahead: threading.Thread | None = None
        #: Starts run leaders in a helper process, off the loop (started by `run`).
        self.spawner = Spawner()
        self.spawner.on_gone = self._spawner_gone
        self.spawn_log.busy = lambda: self.spawner.in_flight > 0
        self.engine = RoutingEngine.from_config(config)
        self.metrics = metrics or Metrics()
        self.clock = clock or Clock()
        self.rng = rng or random.Random()  # noqa: S311 - backoff jitter, not crypto
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.log = get_logger()
        self.tasks: dict[str, TaskRuntime] = {}
        #: The tasks a pass must look at, kept in step with `tasks` as they change
        #: (see `_index`), so that a pass costs what is in motion, not what exists:
        #: tasks with no run that are neither finished, removed nor disabled...
        self._idle: dict[str, TaskRuntime] = {}
        #: ...scheduled tasks (their fires)...
        self._cron: dict[str, TaskRuntime] = {}
        #: ...and submissions that reached a final phase (to be forgotten).
        self._settled: set[str] = set()
        #: Tests set FACTORYD_CHECK_INDEX=1: every pass then proves the index equals
        #: a full scan.
        self._check_index = os.environ.get("FACTORYD_CHECK_INDEX") == "1"
        self.runs: dict[str, ActiveRun] = {}
        self._send, self._recv = anyio.create_memory_object_stream[_Ended | _Started](math.inf)
        self._commands: list[tuple[Callable[[], Any], MemoryObjectSendStream[Any]]] = []
        self._wake = anyio.Event()
        self._wake_reasons: set[str] = set()
        self._tg: TaskGroup | None = None
        self._stopping = False
        self._reload: Callable[[], Config] | None = None
        self._pending_reload = False
        self._next_scan = 0.0
        self._next_track = 0.0
        self.last_pass_wall: float | None = None
        self.passes = 0
        self.started = anyio.Event()
        self._adopt_config_tasks(config, first=True)

    # -- requests from outside the loop (signals, control socket) -----------

    def wake(self, reason: str) -> None:
        self._wake_reasons.add(reason)
        self._wake.set()

    def request_reload(self, loader: Callable[[], Config]) -> None:
        self._reload = loader
        self._pending_reload = True
        self.wake("reload")

    async def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` inside the loop, between passes, and return what it returns.

        This is how the control socket changes state without sharing it.
        """
        send, recv = anyio.create_memory_object_stream[Any](1)
        self._commands.append((fn, send))
        self.wake("command")
        with anyio.fail_after(timeout), recv:
            outcome = await recv.receive()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _run_commands(self) -> None:
        commands, self._commands = self._commands, []
        for fn, reply in commands:
            try:
                outcome = fn()
            except Exception as exc:  # handed back to the caller, not raised here
                outcome = exc
            with contextlib.suppress(anyio.BrokenResourceError, anyio.WouldBlock):
                reply.send_nowait(outcome)
            reply.close()

    def request_stop(self) -> None:
        self._stopping = True
        self.wake("shutdown")

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile until asked to stop, then stop every run and return."""
        if self.spawner.pid is None and self.spawner.failed is None:
            self.spawner.start(self.leader_nofile)
            if self.spawner.failed:
                self.log.warning("spawner.unavailable", reason=self.spawner.failed)
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
            self.log.info(
                "dirs.slow",
                waited=DIRS_AHEAD_WAIT,
                note="kept task directories are still being made; runs start meanwhile",
            )

    def _spawner_gone(self, leaders: list[int]) -> None:
        """The helper died: its running leaders are our children now, so the sweeps
        must take them for leaders (not orphans to reap); spawns use Popen."""
        process.LEADERS.update(leaders)
        if self.spawner.failed != "closed":
            self.log.warning(
                "spawner.gone",
                reason=self.spawner.failed,
                leaders=len(leaders),
                fallback="popen",
            )

    async def _loop(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for run in self._deferred:
                tg.start_soon(self._execute, run)
            self._deferred.clear()
            while True:
                reasons = self._wake_reasons or {"interval"}
                self._wake_reasons = set()
                self._wake = anyio.Event()
                if reasons == {"started"}:
                    # A run reported its pid: note it, no need for a full pass. The
                    # run's pid file is its durable spawn record, so the journal
                    # update rides on the next flush instead of costing one.
                    self._drain(self.clock.mono(), self.clock.wall())
                    await self._sleep()
                    continue
                if "interval" in reasons or "reload" in reasons or self.passes == 0:
                    # Level-based to the end: the index is rebuilt from scratch now
                    # and then, so a change it missed cannot outlive one interval.
                    self._reindex()
                t0 = time.perf_counter()
                self.reconcile_pass()
                self.metrics.pass_seconds.observe(time.perf_counter() - t0)
                await self.store.flush(self)
                for hook in self.on_pass:
                    hook()
                for reason in reasons:
                    self.metrics.passes.labels(reason).inc()
                self.passes += 1
                self.last_pass_wall = self.clock.wall()
                self.metrics.last_pass.set(self.last_pass_wall)
                if not self.started.is_set():
                    self.started.set()
                if self._stopping and not self.runs:
                    break
                await self._sleep()
            tg.cancel_scope.cancel()

    async def _sleep(self) -> None:
        delay = self._sleep_for()
        if self.max_sleep is not None:
            delay = min(delay, self.max_sleep)
        if not self._wake.is_set():
            with anyio.move_on_after(delay):
                await self._wake.wait()

    def reconcile_pass(self) -> None:
        now_m, now_w = self.clock.mono(), self.clock.wall()
        self._drain(now_m, now_w)
        self._run_commands()
        if self._pending_reload:
            self._pending_reload = False
            self._do_reload()
        if self._stopping:
            for run in self.runs.values():
                self._stop_run(run, Outcome.CANCELLED, "daemon shutting down")
            return
        self._fire_schedules(now_w)
        for run in list(self.runs.values()):
            why = self._why_stop(run)
            if why is not None:
                self._stop_run(run, Outcome.CANCELLED, why)
        self._start_wanted(now_m, now_w)
        self._forget_finished_submissions()
        if self._check_index:
            self._verify_index()
        if self.runs and now_m >= self._next_scan:
            self._next_scan = now_m + SCAN_INTERVAL
            reap_strays(self.runs, self.metrics, self.log)
            if now_m >= self._next_track:
                self._next_track = now_m + TRACK_INTERVAL
                track_descendants(self.runs)
        if now_w >= self._next_prune:
            self._next_prune = now_w + 3600.0
            self.store.op(j.op_prune(now_w - self.config.daemon.retain_runs))

    def _sleep_for(self) -> float:
        now_m, now_w = self.clock.mono(), self.clock.wall()
        soonest = self.config.daemon.loop_interval
        for rt in self._idle.values():
            if rt.retry_at is not None:
                soonest = min(soonest, rt.retry_at - now_m)
        for rt in self._cron.values():
            if rt.next_fire is not None:
                soonest = min(soonest, rt.next_fire - now_w)
        if self.runs:
            soonest = min(soonest, max(self._next_scan - now_m, 0.0) + 0.001)
        return max(soonest, 0.0)

    # -- desired state ----------------------------------------------------------

    def _adopt_config_tasks(self, config: Config, *, first: bool = False) -> None:
        now_w = self.clock.wall()
        wanted = {t.name: t for t in config.tasks}
        for name, rt in self.tasks.items():
            if rt.source == "config" and name not in wanted and not rt.removed:
                rt.removed = True
                self._set_phase(rt, TaskPhase.CANCELLED, "removed from config")
        for name, spec in wanted.items():
            rt = self.tasks.get(name)
            if rt is None or (rt.removed and rt.run is None):
                rt = self.tasks[name] = TaskRuntime(spec=spec, label=name)
                rt.waiting_since = self.clock.mono()
                self._index(rt)
                self._init_phase(rt, now_w)
            elif rt.spec != spec:
                rt.spec = spec
                self._index(rt)
                rt.removed = False
                rt.book = RestartBook.empty()
                rt.retry_at = None
                rt.exclude.clear()
                self._init_phase(rt, now_w, "config changed")
        short = fdlimit.shortfall(config.daemon.max_concurrent)
        if short is not None:
            self.log.warning("limits.nofile", reason=short)
        dirs = make_ahead(kept_workdirs(config))
        if first:
            self._dirs_ahead = dirs
        else:
            self.log.info("config.applied", tasks=len(wanted))

    def _init_phase(self, rt: TaskRuntime, now_w: float, reason: str = "new") -> None:
        spec = rt.spec
        rt.pending_fires = 0
        rt.next_fire = None
        if not spec.enabled:
            self._set_phase(rt, TaskPhase.DISABLED, "disabled in config")
        elif spec.kind is TaskKind.SCHEDULED and spec.schedule:
            rt.next_fire = next_fire(spec.schedule, spec.timezone, now_w)
            self._set_phase(rt, TaskPhase.WAITING, f"{reason}; next fire at {_iso(rt.next_fire)}")
        else:
            self._set_phase(rt, TaskPhase.PENDING, reason)

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
            self.log.info(
                "cron.missed",
                task=rt.name,
                missed=plan.missed,
                runs=plan.runs,
                decision=plan.decision,
            )
            if plan.runs:
                self._set_phase(rt, TaskPhase.PENDING, plan.decision)

    def _fire_schedules(self, now_w: float) -> None:
        for rt in list(self._cron.values()):
            if rt.next_fire is None or now_w < rt.next_fire or rt.removed:
                continue
            spec = rt.spec
            assert spec.schedule is not None
            rt.last_fire = rt.next_fire
            rt.next_fire = next_fire(spec.schedule, spec.timezone, now_w)
            if rt.pending_fires >= spec.missed_cap:
                self.metrics.cron_fires.labels(rt.label, "over_cap").inc()
                self.log.warning(
                    "cron.over_cap", task=rt.name, pending=rt.pending_fires, cap=spec.missed_cap
                )
                continue
            rt.pending_fires += 1
            self.metrics.cron_fires.labels(rt.label, "queued").inc()
            self.log.info(
                "cron.fire", task=rt.name, pending=rt.pending_fires, next_fire=_iso(rt.next_fire)
            )
            if rt.phase is TaskPhase.WAITING:
                self._set_phase(rt, TaskPhase.PENDING, f"cron fire at {_iso(rt.last_fire)}")

    def _why_stop(self, run: ActiveRun) -> str | None:
        if run.stop_reason is not None:
            return None
        rt = self.tasks.get(run.task)
        if rt is None or rt.removed:
            return "task removed from config"
        if rt.spec != run.spec:
            return "task changed in config"
        if not rt.spec.enabled:
            return "task disabled"
        if rt.phase is TaskPhase.CANCELLED:
            return rt.reason
        return None

    # -- starting ---------------------------------------------------------------

    def _start_wanted(self, now_m: float, now_w: float) -> None:
        # Runs every pass over every idle task, so it asks only what the index
        # does not already say (each has no run and is enabled, present and
        # unfinished: `_in_motion`): is its backoff over, has a schedule fired.
        scheduled = TaskKind.SCHEDULED
        wanted = [
            rt
            for rt in self._idle.values()
            if (rt.retry_at is None or now_m >= rt.retry_at)
            and (rt.pending_fires > 0 or rt.spec.kind is not scheduled)
        ]
        if not wanted:
            return
        free = self.config.daemon.max_concurrent - len(self.runs)

        def order(rt: TaskRuntime) -> tuple[int, float]:
            return PRIORITY_ORDER[rt.spec.route.priority], rt.waiting_since

        if free >= len(wanted):
            for rt in sorted(wanted, key=order):
                self._start(rt, now_m, now_w)
            return
        # Only the first `free` in priority order can start: no need to sort them all.
        first = heapq.nsmallest(free, wanted, key=order) if free > 0 else []
        for rt in first:
            self._start(rt, now_m, now_w)
        chosen = {id(rt) for rt in first}
        pending, queued = TaskPhase.PENDING, WAITING_FOR_SLOT
        for rt in wanted:
            if (rt.reason is not queued or rt.phase is not pending) and id(rt) not in chosen:
                self._set_phase(rt, pending, queued)

    def _busy_arms(self) -> set[str]:
        per_arm = Tally(run.arm for run in self.runs.values())
        per_pool = Tally(p for run in self.runs.values() for p in run.pools)
        busy = set()
        for name, launch in self.config.launch.items():
            if launch.max_concurrent is not None and per_arm[name] >= launch.max_concurrent:
                busy.add(name)
        full_pools = {p for p, cap in self.config.pool_caps.items() if per_pool[p] >= cap}
        if full_pools:
            busy.update(a.name for a in self.config.arms if full_pools.intersection(a.pools))
        return busy

    def _start(self, rt: TaskRuntime, now_m: float, now_w: float) -> None:
        spec = rt.spec
        ttl = None
        if spec.timeout is not None:
            ttl = spec.timeout + spec.stop_grace + 60.0
        t0 = time.perf_counter()
        decision = self.engine.route(
            spec.route, now_w, exclude=rt.exclude, busy=self._busy_arms(), ttl=ttl
        )
        self.metrics.decision(decision, time.perf_counter() - t0)
        if decision.arm is None:
            rt.exclude.clear()
            capacity_only = (
                decision.rejections
                and all(
                    r.reason in ("at_capacity", "not_allowed", "disabled")
                    for r in decision.rejections
                )
                and any(r.reason == "at_capacity" for r in decision.rejections)
            )
            if capacity_only:
                if rt.reason != "every allowed arm is at its concurrency cap":
                    self._set_phase(
                        rt, TaskPhase.PENDING, "every allowed arm is at its concurrency cap"
                    )
                return
            rt.retry_at = now_m + self.config.daemon.loop_interval
            if rt.phase is not TaskPhase.BLOCKED or rt.reason != decision.rationale():
                self.log.warning("route.none", task=rt.name, rationale=decision.rationale())
                self._set_phase(rt, TaskPhase.BLOCKED, decision.rationale())
            return
        arm = self.engine.arms[decision.arm]
        run_id = new_run_id(now_w)
        self.log.info(
            "route.decision",
            task=rt.name,
            run_id=run_id,
            arm=arm.name,
            pools=list(arm.pools),
            strategy=decision.strategy,
            degraded=decision.degraded,
            rationale=decision.rationale(),
        )
        try:
            prepared = prepare(
                self.config,
                spec,
                arm,
                run_id,
                self.base_env,
                self.spawn_log,
                keep_workdir=rt.source == "config",
            )
        except LaunchError as exc:
            self.engine.settle(
                decision,
                now=now_w,
                usage=None,
                ok=False,
                duration=0.0,
                task_type=str(spec.route.type),
            )
            failed = RunResult(run_id, Outcome.SPAWN_FAILED, str(exc), started_ok=False)
            self.metrics.spawn_failures.labels(rt.label, arm.name).inc()
            self.log.error(
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
            self._apply_verdict(rt, failed, arm.name, now_m)
            return
        gate = self.store.run_intent(
            run_id, rt.name, arm.name, now_w, decision.reservation, str(prepared.log_path)
        )
        self._launch(
            rt,
            decision,
            prepared.spec,
            prepared.run_dir,
            prepared.log_path,
            now_m,
            now_w,
            gate=gate,
        )

    def _launch(
        self,
        rt: TaskRuntime | None,
        decision: Decision,
        spec: RunSpec,
        run_dir: Any,
        log_path: Any,
        started_mono: float,
        started_wall: float,
        *,
        gate: Gate | None = None,
        adoption: Adoption | None = None,
    ) -> ActiveRun:
        """Register a run and start its runner task (fresh or adopted)."""
        run_id = spec.run_id

        def started(pid: int, fds: tuple[int, int] | None, create_time: float | None) -> None:
            self._send.send_nowait(_Started(run_id, pid, fds, create_time))
            self.wake("started")

        runner = Runner(
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
            spec=rt.spec if rt else None,  # type: ignore[arg-type]
            arm=spec.arm,
            cli=spec.cli,
            pools=arm.pools if arm else (),
            decision=decision,
            runner=runner,
            started_mono=started_mono,
            started_wall=started_wall,
            run_dir=run_dir,
            log_path=log_path,
        )
        if adoption is not None:
            run.pid, run.state = adoption.pid, "running"
        self.runs[run_id] = run
        if rt is not None:
            rt.run = run_id
            rt.last_arm = spec.arm
            rt.retry_at = None
            if adoption is None:
                rt.runs += 1
                self.metrics.runs_started.labels(rt.label, spec.arm).inc()
            self._set_phase(
                rt,
                TaskPhase.RUNNING,
                f"run {run_id} on {spec.arm}" + (" (adopted)" if adoption else ""),
            )
        if self._tg is None:  # recovery adopts runs before the loop starts
            self._deferred.append(run)
        else:
            self._tg.start_soon(self._execute, run)
        return run

    def adopt_run(
        self,
        rt: TaskRuntime | None,
        decision: Decision,
        spec: RunSpec,
        adoption: Adoption,
        started_wall: float,
    ) -> ActiveRun:
        """Watch a run a previous daemon started (called by recovery before the loop)."""
        return self._launch(
            rt,
            decision,
            spec,
            None,
            spec.log.path,
            adoption.started,
            started_wall,
            adoption=adoption,
        )

    def record_gone(
        self,
        rt: TaskRuntime | None,
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
        run = ActiveRun(
            run_id=run_id,
            task=decision.task,
            spec=rt.spec if rt else None,
            arm=decision.arm or "",
            cli=self.engine.arms[decision.arm].cli
            if decision.arm in self.engine.arms
            else "unknown",
            pools=tuple(decision.charges),
            decision=decision,
            runner=None,
            started_mono=self.clock.mono(),  # type: ignore[arg-type]
            started_wall=decision.at,
            run_dir=None,
            log_path=None,
        )
        self.runs[run_id] = run
        if rt is not None:
            rt.run = run_id
        result = RunResult(run_id, outcome, reason, started_ok=ran)
        self._finish(run, result, self.clock.mono(), self.clock.wall())

    async def _execute(self, run: ActiveRun) -> None:
        try:
            result = await run.runner.run()
        except Exception as exc:  # a bug in a runner must not take the daemon down
            run.log.exception("run.internal_error")
            result = RunResult(
                run.run_id,
                Outcome.FAILED,
                f"internal error: {exc!r}",
                started=run.started_mono,
                ended=self.clock.mono(),
            )
        if run.run_dir is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    remove_run_dir, run.run_dir, limiter=self._cleanup_limiter
                )
        self._send.send_nowait(_Ended(run.run_id, result))
        self.wake("exit")

    def _stop_run(self, run: ActiveRun, outcome: Outcome, reason: str) -> None:
        if run.stop_reason is not None:
            return
        run.stop_reason = reason
        run.state = "stopping"
        run.log.info(
            "run.stopping",
            reason=reason,
        )
        if run.runner is not None:
            run.runner.request_stop(StopRequest(outcome, reason))

    # -- observed state -----------------------------------------------------------

    def _drain(self, now_m: float, now_w: float) -> None:
        while True:
            try:
                msg = self._recv.receive_nowait()
            except anyio.WouldBlock:
                return
            run = self.runs.get(msg.run_id)
            if run is None:
                continue
            if isinstance(msg, _Started):
                self.store.run_started(run.run_id, msg.pid, msg.create_time, msg.leader_fds)
                run.pid = msg.pid
                if run.state == "starting":
                    run.state = "running"
                run.log.info(
                    "run.started",
                    pid=msg.pid,
                )
            else:
                self._finish(run, msg.result, now_m, now_w)

    def _finish(self, run: ActiveRun, result: RunResult, now_m: float, now_w: float) -> None:
        del self.runs[run.run_id]
        spec = run.spec
        rt = self.tasks.get(run.task)
        label = rt.label if rt is not None else run.task
        usage = (result.usage or Usage()) if result.started_ok else None
        limited = result.outcome is Outcome.LIMITED
        unknown = (
            result.outcome in (Outcome.LOST, Outcome.EXIT_UNKNOWN)
            and result.usage is None
            and result.started_ok
        )
        if unknown:
            # It ran (at least partly) while no daemon watched: what it used is
            # unknown, so it is charged its estimate rather than nothing.
            res_id = run.decision.reservation.id if run.decision.reservation else ""
            self.engine.ledger.commit(res_id, run.decision.charges)
            settled = Settlement(
                dict(run.decision.charges), rolled_back=False, hold_had_expired=False
            )
            usage = None
        else:
            settled = self.engine.settle(
                run.decision,
                now=now_w,
                usage=usage,
                ok=result.outcome is Outcome.SUCCEEDED,
                duration=result.duration,
                task_type=str(spec.route.type) if spec else "generation",
                arm_fault=result.outcome is Outcome.SPAWN_FAILED and run.cli != "command",
                # Limits, operator cancels and shutdowns teach the router nothing.
                limited=not teaches_router(result.outcome),
            )
        self.store.run_ended(
            run.run_id,
            now_w,
            str(result.outcome),
            result.reason,
            None if usage is None else plain(usage),
        )
        m = self.metrics
        m.run_finished(label, run.arm, run.cli, result)
        if usage is not None:
            spec_arm = self.engine.arms.get(run.arm)
            cost = usage.cost_usd
            if cost is None and spec_arm is not None:
                cost = spec_arm.cost_of(usage)  # the CLI reports none: the arm's prices
            m.usage(run.arm, usage, cost)
        if limited and result.limit is not None:
            until = self.engine.report_limit(run.arm, result.limit.until, now_w, result.limit.text)
            m.limit(run.arm, run.pools, result.limit)
            run.log.warning(
                "limit.hit",
                until=_iso(until),
                raw=result.limit.text,
                status=result.limit.status,
            )
        run.log.info(
            "run.finished",
            outcome=str(result.outcome),
            reason=result.reason,
            exit_status=result.exit_status,
            duration=round(result.duration, 3),
            log=str(run.log_path) if result.log_kept else None,
            log_error=result.log_error,
            bytes_dropped=result.bytes_dropped,
            sigkilled=result.sigkilled,
            orphans_killed=result.orphans_killed,
            hold_expired=settled.hold_had_expired,
        )
        if rt is None:
            return
        rt.run = None
        rt.last_outcome = str(result.outcome)
        self._index(rt)
        if self._stopping and result.outcome is Outcome.CANCELLED:
            # Stopped with the daemon: not a verdict on the task, which resumes
            # at the next start (its run is recorded as cancelled).
            self._set_phase(rt, TaskPhase.PENDING, "stopped with the daemon")
            return
        if rt.removed:
            self._forget(rt)
            return
        if run.spec is not None and rt.spec != spec:
            return  # the new spec starts on the next pass
        if rt.phase is TaskPhase.CANCELLED:
            return
        self._apply_verdict(rt, result, run.arm, now_m)

    def _apply_verdict(self, rt: TaskRuntime, result: RunResult, arm: str, now_m: float) -> None:
        verdict: Verdict = after_exit(
            rt.spec, rt.book, result.outcome, result.reason, result.duration, now_m, self.rng
        )
        arms = self.engine.arms
        others = any(a != arm and a in arms and arms[a].enabled for a in rt.spec.route.arms or arms)
        rt.exclude = exclusions_after(rt.exclude, result.outcome, arm, alternatives=others)
        if verdict.counts_restart:
            rt.restarts += 1
            self.metrics.restarts.labels(rt.label).inc()
        if verdict.phase is TaskPhase.GAVE_UP:
            self.metrics.give_ups.labels(rt.label).inc()
        rt.retry_at = verdict.retry_at
        rt.waiting_since = now_m
        phase, reason = verdict.phase, verdict.reason
        if rt.spec.kind is TaskKind.SCHEDULED and phase is TaskPhase.WAITING:
            rt.pending_fires = max(0, rt.pending_fires - 1)
            if rt.pending_fires:
                phase, reason = TaskPhase.PENDING, f"{reason}; {rt.pending_fires} fire(s) queued"
        self._set_phase(rt, phase, reason)

    # -- the index of tasks in motion ---------------------------------------------

    def _in_motion(self, rt: TaskRuntime) -> bool:
        return (
            rt.run is None
            and not rt.removed
            and rt.spec.enabled
            and rt.phase not in TERMINAL
            and self.tasks.get(rt.name) is rt
        )

    def _index(self, rt: TaskRuntime) -> None:
        """Bring the index in step with one task after something about it changed."""
        name = rt.name
        if self._in_motion(rt):
            self._idle[name] = rt
        elif self._idle.get(name) is rt:
            del self._idle[name]
        if rt.spec.kind is TaskKind.SCHEDULED and self.tasks.get(name) is rt:
            self._cron[name] = rt
        elif self._cron.get(name) is rt:
            del self._cron[name]
        if rt.source == "submitted" and rt.phase in TERMINAL:
            self._settled.add(name)

    def _forget(self, rt: TaskRuntime) -> None:
        del self.tasks[rt.name]
        self._idle.pop(rt.name, None)
        self._cron.pop(rt.name, None)
        self._settled.discard(rt.name)

    def _reindex(self) -> None:
        self._idle, self._cron, self._settled = {}, {}, set()
        for rt in self.tasks.values():
            self._index(rt)

    def _verify_index(self) -> None:
        idle, cron, settled = self._idle, self._cron, self._settled
        self._reindex()
        assert idle.keys() == self._idle.keys(), ("idle", idle.keys() ^ self._idle.keys())
        assert cron.keys() == self._cron.keys(), ("cron", cron.keys() ^ self._cron.keys())
        assert settled >= self._settled, ("settled", self._settled - settled)

    def _set_phase(self, rt: TaskRuntime, phase: TaskPhase, reason: str) -> None:
        old = rt.phase
        rt.phase, rt.reason = phase, reason
        self._index(rt)
        self.store.task(rt.name)
        if old is not phase:
            # The happy path (a run starts; it succeeds) is already told by
            # route.decision, run.started and run.finished: one line per fact.
            quiet = phase is TaskPhase.RUNNING or (
                old is TaskPhase.RUNNING and phase is TaskPhase.SUCCEEDED
            )
            log = self.log.debug if quiet else self.log.info
            log("task.phase", task=rt.name, old=str(old), new=str(phase), reason=reason)

    # -- processes that escaped ---------------------------------------------------

    # -- reload -----------------------------------------------------------------

    def _do_reload(self) -> None:
        assert self._reload is not None
        try:
            config = self._reload()
        except Exception as exc:
            self.metrics.config_reloads.labels("error").inc()
            self.metrics.config_reload_ok.set(0)
            problems = getattr(exc, "problems", None)
            errors = [str(p) for p in problems] if problems else [str(exc)]
            self.log.error("config.reload_failed", errors=errors, note="keeping the running config")
            return
        self.apply_config(config)
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.config_reload_ok.set(1)

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.engine.reconfigure(settings_from_config(config))
        self._adopt_config_tasks(config)

    # -- submissions and operator actions -----------------------------------------

    def add_submission(self, spec: TaskSpec, label: str) -> TaskRuntime:
        """A durable submission enters desired state (already in the journal)."""
        rt = self.tasks.get(spec.name)
        if rt is not None:
            return rt
        rt = self.tasks[spec.name] = TaskRuntime(spec=spec, label=label, source="submitted")
        rt.waiting_since = self.clock.mono()
        self._index(rt)
        self._init_phase(rt, self.clock.wall(), "submitted")
        self.wake("submit")
        return rt

    def cancel(self, name: str, reason: str = "cancelled by operator") -> bool:
        rt = self.tasks.get(name)
        if rt is None:
            return False
        rt.retry_at = None
        rt.pending_fires = 0
        self._set_phase(rt, TaskPhase.CANCELLED, reason)
        self.wake("cancel")
        return True

    def _forget_finished_submissions(self) -> None:
        """Done submissions leave memory (the journal keeps them until retention)."""
        if not self._settled:
            return
        done = []
        for name in list(self._settled):
            rt = self.tasks.get(name)
            if rt is None or rt.phase not in TERMINAL:
                self._settled.discard(name)
            elif rt.run is None:
                done.append(rt)
        now = self.clock.wall()
        for rt in done:
            self.store.op(j.op_submission_state(rt.name, str(rt.phase), rt.reason, now))
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
            self._forget(rt)

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

    def task_phases(self) -> dict[str, int]:
        counts = {str(p): 0 for p in TaskPhase}
        for rt in self.tasks.values():
            counts[str(rt.phase)] += 1
        return counts

    def blocked_by_label(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rt in self.tasks.values():
            counts[rt.label] = counts.get(rt.label, 0) + (rt.phase is TaskPhase.BLOCKED)
        return counts

    def run_states(self) -> dict[str, int]:
        counts = {"starting": 0, "running": 0, "stopping": 0}
        for run in self.runs.values():
            counts[run.state] += 1
        return counts

    def healthy(self, max_age: float) -> tuple[bool, str]:
        if self.last_pass_wall is None:
            return False, "no reconcile pass yet"
        age = self.clock.wall() - self.last_pass_wall
        if age > max_age:
            return False, f"last reconcile pass {age:.1f}s ago (max {max_age:.0f}s)"
        return True, f"ok: last pass {age:.2f}s ago, {len(self.runs)} run(s)"
