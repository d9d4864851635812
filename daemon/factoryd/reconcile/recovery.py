"""Start-up recovery: rebuild state from the journal, adopt or account for every run.

Order matters:

1. pools (usage, windows, limits) and soft routing state come back first;
2. open submissions re-enter desired state, validated against today's config;
3. task progress (runs, restarts, give-ups, cron fires) is restored for
   tasks whose spec is unchanged; cron applies its missed-fire policy;
4. each run the journal says is live is adopted if its process still
   exists - same pid AND same start time, so a reused pid is never adopted -
   or else recorded as `lost` (charged its estimate) and its task's policy
   decides; its reservation comes back either way;
5. any process that carries this daemon's marker (FACTORYD_STATE_DIR) and a
   run id that was not adopted is killed with its process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from factoryd.config.submission import SubmitError, build_spec
from factoryd.core.lifecycle import TERMINAL, TaskPhase
from factoryd.core.outcome import Outcome
from factoryd.proc import process, proctime
from factoryd.proc.spawnlog import Spawned, read_spawn_log
from factoryd.reconcile.strays import reap_unowned
from factoryd.routing.decision import Decision
from factoryd.routing.ledger import Reservation
from factoryd.routing.snapshot import SnapshotError, load_state, read_reservation, restore_pool
from factoryd.run.launch import adopted_run_spec
from factoryd.run.runspec import Adoption
from factoryd.state import journal as j
from factoryd.state.batch import spec_digest
from factoryd.units.timefmt import iso

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler


@dataclass(slots=True)
class Report:
    adopted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    reaped: int = 0
    submissions: int = 0
    rejected_submissions: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "adopted": len(self.adopted),
            "lost": len(self.lost),
            "reaped": self.reaped,
            "submissions": self.submissions,
            "rejected_submissions": self.rejected_submissions,
        }


def recover(rec: Reconciler, journal: j.Journal, invocation: str = "") -> Report:
    """Rebuild state; `invocation` is systemd's INVOCATION_ID ("" outside systemd)."""
    report = Report()
    previous = journal.meta("invocation")
    # Under systemd, a daemon that died took its runs with it (KillMode=mixed).
    killed_with_daemon = bool(previous) and previous != invocation
    journal.apply_sync([j.op_meta("invocation", invocation)])
    now_w = rec.clock.wall()
    _restore_pools(rec, journal)
    soft = journal.routing_soft()
    if soft:
        try:
            load_state(
                {"version": 1, "arms": soft.get("arms", {}), "quality": soft.get("quality", [])},
                rec.engine.ledger,
                rec.engine.telemetry,
                rec.engine.quality,
            )
        except SnapshotError as exc:
            rec.logger.warning("recovery.soft_state_ignored", error=str(exc))
    for sub in journal.open_submissions():
        try:
            spec, label = build_spec(rec.config, sub.request, sub.id, f"submission {sub.id}")
        except SubmitError as exc:
            report.rejected_submissions += 1
            journal.apply_sync([j.op_submission_state(sub.id, "rejected", str(exc), now_w)])
            rec.logger.warning("recovery.submission_rejected", id=sub.id, error=str(exc))
            continue
        rec.table.add_submission(spec, label)
        report.submissions += 1
    _restore_tasks(rec, journal)
    adopted_ids = _restore_runs(rec, journal, report, killed_with_daemon)
    keep = adopted_ids | rec.runs.keys()
    report.reaped = reap_unowned(rec.config.daemon.state_dir, keep, rec.metrics, rec.logger)
    rec.logger.info("recovery.done", **report.as_dict())
    return report


def _restore_pools(rec: Reconciler, journal: j.Journal) -> None:
    ledger = rec.engine.ledger
    for name, row in journal.pools().items():
        if name in ledger.pools:
            restore_pool(
                ledger,
                name,
                used=row["used"],
                window_start=row["window_start"],
                limited_until=row["limited_until"],
                limited_reason=row["limited_reason"],
                strikes=row["strikes"],
            )


def _restore_tasks(rec: Reconciler, journal: j.Journal) -> None:
    for name, row in journal.task_states().items():
        rt = rec.tasks.get(name)
        if rt is None:
            continue
        if row["spec_digest"] != spec_digest(rt.spec):
            rec.logger.info("recovery.task_changed", task=name, note="progress not restored")
            continue
        rt.runs, rt.restarts = row["runs"], row["restarts"]
        phase = TaskPhase(row["phase"])
        if phase in TERMINAL and phase is not TaskPhase.DISABLED:
            rt.phase, rt.reason = phase, row["reason"]
        if rt.spec.schedule is not None:
            rt.pending_fires = row["pending_fires"]
            if row["last_fire"] is not None:
                rec.table.restore_schedule(name, row["last_fire"])
            if rt.pending_fires and rt.phase is TaskPhase.WAITING:
                rt.phase, rt.reason = TaskPhase.PENDING, f"{rt.pending_fires} fire(s) queued"
            elif rt.phase is TaskPhase.WAITING and rt.next_fire is not None:
                # Known before this start: not "new".
                last = row["last_fire"]
                rt.reason = f"next fire at {iso(rt.next_fire)}" + (
                    f" (last fire at {iso(last)})" if last is not None else ""
                )


def _spawned(rec: Reconciler, row: j.RunRow, spawns: dict[str, Spawned]) -> j.RunRow:
    """Did a run whose pid never reached the journal spawn? The spawn log
    (pid, start time, pipe fds; a per-run pid file from older versions), or
    a live process carrying its marker, says so. Returns the row completed
    with what was found."""
    found = spawns.get(row.id) or _legacy_pid_file(rec.config.daemon.state_dir, row.id)
    if found is not None:
        return replace(
            row,
            pid=found.pid,
            create_time=found.start_time or _start_if_ours(found.pid, row.id),
            pipe_fds=found.leader_fds,
        )
    for proc in psutil.process_iter():
        if process.run_marker(proc) == row.id:
            try:
                return replace(row, pid=proc.pid, create_time=proc.create_time())
            except psutil.Error:
                continue
    return row


def _legacy_pid_file(state_dir: Path, run_id: str) -> Spawned | None:
    """`STATE_DIR/runs/RUN_ID.pid`, written by versions before the spawn log."""
    path = state_dir / "runs" / f"{run_id}.pid"
    try:
        fields = path.read_text().split()
        out_fd, err_fd = int(fields[2]), int(fields[3])
        spawned = Spawned(
            int(fields[0]), (out_fd, err_fd) if out_fd >= 0 else None, float(fields[1]) or None
        )
    except (OSError, ValueError, IndexError):
        return None
    path.unlink(missing_ok=True)
    return spawned


def _start_if_ours(pid: int, run_id: str) -> float | None:
    """The start time of `pid` if it is alive and carries `run_id`'s marker (the
    spawn recorded no start time: it is read after the spawn, off the loop)."""
    try:
        if process.run_marker(psutil.Process(pid)) != run_id:
            return None
    except psutil.Error:
        return None
    return proctime.start_time(pid)


def _restore_runs(
    rec: Reconciler, journal: j.Journal, report: Report, killed_with_daemon: bool
) -> set[str]:
    adopted: set[str] = set()
    gone: dict[str, Outcome] = {}
    now_m, now_w = rec.clock.mono(), rec.clock.wall()
    ledger = rec.engine.ledger
    spawns: dict[str, Spawned] | None = None
    for row in journal.live_runs():
        res = _reservation(rec, row)
        if res is not None:
            ledger.restore_reservation(res)
        decision = Decision(
            task=row.task,
            strategy="recovered",
            at=row.started_at,
            arm=row.arm,
            reservation=res,
            ranking=(),
            rejections=(),
            charges=dict(res.charges) if res else {},
        )
        pid, ctime = row.pid, row.create_time
        if pid is None:  # crashed between the intent and the spawn report
            if spawns is None:
                spawns = read_spawn_log(rec.spawn_log.path)
            row = _spawned(rec, row, spawns)
            if row.pid is not None:
                rec.batch.run_started(row.id, row.pid, row.create_time, row.pipe_fds)
            pid, ctime = row.pid, row.create_time
        rt = rec.tasks.get(row.task)
        arm = rec.engine.arms.get(row.arm)
        alive = pid is not None and process.same_process(pid, ctime)
        if alive and arm is not None:
            assert pid is not None and ctime is not None
            spec = adopted_run_spec(
                rec.config, row.id, row.task, arm, _log_path(rec, row), rt.spec if rt else None
            )
            started_mono = now_m - max(0.0, now_w - row.started_at)
            fds = row.pipe_fds
            run = rec.book.adopt_run(
                rt, decision, spec, Adoption(pid, ctime, started_mono, fds), row.started_at
            )
            # Its worktree is there; the plan it started with is in the record,
            # and it is committed and removed when the run ends, as usual.
            run.workspace = rec.book.worktrees.workspaces.recorded(row.id)
            run.hook_env = {
                k: os.environ[k] for k in rec.config.daemon.inherit_env if k in os.environ
            }
            adopted.add(row.id)
            report.adopted.append(row.id)
            rec.logger.info("recovery.adopted", task=row.task, run_id=row.id, arm=row.arm, pid=pid)
            continue
        outcome, reason = gone_verdict(row, pid, ctime, killed_with_daemon)
        if outcome is Outcome.LOST:
            report.lost.append(row.id)
        else:
            report.ended.append(row.id)
        rec.logger.info(
            "recovery.gone",
            task=row.task,
            run_id=row.id,
            pid=pid,
            outcome=str(outcome),
            reason=reason,
        )
        rec.book.settle_vanished(rt, decision, row.id, outcome, reason, ran=pid is not None)
        gone[row.id] = outcome
    _sweep_workspaces(rec, adopted, gone)
    return adopted


def _sweep_workspaces(rec: Reconciler, adopted: set[str], gone: dict[str, Outcome]) -> None:
    """Worktrees of runs that ended while no daemon watched: commit, remove, keep."""
    specs = [*(t.spec for t in rec.table.tasks.values()), *rec.config.templates.values()]
    repos = {s.workspace.repo for s in specs if s.workspace is not None}
    report = rec.book.worktrees.workspaces.sweep(live=adopted, repos=repos, outcomes=gone)
    for done in report.finished:
        rec.logger.info("workspace.swept", outcome=str(done.outcome), **done.event_fields())
    for problem in report.problems:
        rec.logger.warning("workspace.sweep_problem", problem=problem)


def gone_verdict(
    row: j.RunRow, pid: int | None, create_time: float | None, killed_with_daemon: bool
) -> tuple[Outcome, str]:
    """What a run whose process is gone most likely did, and so what policy may do.

    * never spawned (no pid, no marked process): `lost`, nothing ran;
    * started before this boot, or killed by systemd with the previous daemon
      (its cgroup is cleaned when the main process dies): `lost`, it was
      interrupted, and the task's restart policy decides;
    * otherwise it ended on its own while no daemon watched: `exit_unknown`,
      which policies treat as done, because running it again would run
      finished work twice.
    """
    if pid is None:
        return Outcome.LOST, "never started (the daemon died before the spawn)"
    if create_time is not None and create_time < psutil.boot_time():
        return Outcome.LOST, "interrupted by a reboot"
    if killed_with_daemon:
        return Outcome.LOST, "stopped with the previous daemon (systemd cleaned its cgroup)"
    return Outcome.EXIT_UNKNOWN, "ended while no daemon watched; exit status unknown"


def _reservation(rec: Reconciler, row: j.RunRow) -> Reservation | None:
    """The reservation a live run held, as the journal recorded it (charges on
    pools the config no longer has are dropped)."""
    if not row.reservation:
        return None
    try:
        return read_reservation(
            row.reservation, f"run {row.id} reservation", rec.engine.ledger, drop_unknown_pools=True
        )
    except SnapshotError as exc:
        rec.logger.warning("recovery.reservation_ignored", run_id=row.id, error=str(exc))
        return None


def _log_path(rec: Reconciler, row: j.RunRow) -> Path:
    if row.log_path:
        return Path(row.log_path)
    return rec.config.daemon.log_dir / "_adopted" / f"{row.id}.log"
