"""Processes that outlive their runs: find them, remember them, kill them.

Three sweeps with different costs:

* `reap_orphans` (from the loop, every 5 s while runs live): read the
  daemon's own children list (cheap); anything there that is not a run
  leader was re-parented to us (we are a subreaper) and is killed and
  reaped once its run is over;
* `track_descendants` (from the loop, every 60 s): one full /proc pass that
  remembers each live run's descendants, so one that later leaves its group
  with setsid is still known when the run is stopped;
* `reap_unowned` (once, at start-up recovery): every process that carries
  this daemon's state-dir marker and a run id no run owns.

All three end the same way: `kill_and_reap`.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Collection, Mapping
from pathlib import Path

import psutil
from structlog.typing import FilteringBoundLogger

from factoryd.observe.metrics import Metrics
from factoryd.proc import process
from factoryd.proc.tree import WORKER_CHILDREN
from factoryd.reconcile.runstate import ActiveRun

#: Seconds between scans for escaped descendants and orphans while runs live.
SCAN_INTERVAL = 5.0
#: Seconds between full /proc scans that remember each run's descendants. A
#: full scan reads every process's stat file: at 5 s it was most of the idle
#: CPU; stop-time snapshots and the subreaper cover what happens in between.
TRACK_INTERVAL = 60.0


class StraySweeper:
    """Runs the loop's two sweeps on their own intervals (monotonic time)."""

    def __init__(self, metrics: Metrics, logger: FilteringBoundLogger) -> None:
        self.metrics = metrics
        self.logger = logger
        #: When the next sweep is due (the loop wakes for it while runs live).
        self.next_due = 0.0
        self._next_track = 0.0

    def sweep(self, runs: Mapping[str, ActiveRun], now: float) -> None:
        if not runs or now < self.next_due:
            return
        self.next_due = now + SCAN_INTERVAL
        reap_orphans(runs, self.metrics, self.logger)
        if now >= self._next_track:
            self._next_track = now + TRACK_INTERVAL
            track_descendants(runs)


def kill_and_reap(procs: list[psutil.Process]) -> int:
    """Kill `procs` and collect those that were our children; return how many were killed."""
    killed = process.kill_processes(procs)
    for proc in procs:
        process.reap_pid(proc.pid)
    return killed


def reap_orphans(
    runs: Mapping[str, ActiveRun], metrics: Metrics, logger: FilteringBoundLogger
) -> int:
    """Kill and reap processes re-parented to us whose run is over; return how many."""
    leaders = {run.pid for run in runs.values() if run.pid is not None}
    strays = []
    with WORKER_CHILDREN.quiet() as workers:
        if workers is None:
            return 0  # a worker thread is forking: look again at the next sweep
        leaders |= workers
    for pid in process.direct_children():
        if pid in leaders or pid in process.LEADERS:
            continue
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                process.reap_pid(pid)
                continue
        except psutil.Error:
            continue
        marker = process.run_marker(proc)
        if marker is not None and marker not in runs:
            strays.append(proc)
    if not strays:
        return 0
    killed = kill_and_reap(strays)
    metrics.orphans_reaped.inc(killed)
    logger.warning("orphans.reaped", count=killed)
    return killed


def reap_unowned(
    state_dir: Path,
    keep: Collection[str],
    metrics: Metrics,
    logger: FilteringBoundLogger,
) -> int:
    """Kill processes this daemon started (by state-dir marker) whose run id is not in `keep`."""
    ours = str(state_dir)
    strays: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(process.STATE_DIR_ENV) != ours:
            continue
        run_id = env.get(process.RUN_ID_ENV)
        if run_id is None or run_id in keep:
            continue
        strays.append(proc)
    for proc in strays:
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == proc.pid:  # a run leader: take its group too
                process.signal_group(proc.pid, signal.SIGKILL)
    killed = kill_and_reap(strays)
    if strays:
        metrics.orphans_reaped.inc(len(strays))
        logger.warning("recovery.reaped", count=len(strays))
    return killed


def track_descendants(runs: Mapping[str, ActiveRun]) -> None:
    """One full /proc pass: hand every live run's descendants to its runner."""
    children: dict[int, list[int]] = {}
    try:
        for proc in psutil.process_iter(["ppid"]):
            children.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)
    except psutil.Error:
        return
    for run in runs.values():
        if run.pid is None or run.runner is None:
            continue
        found, stack = [], list(children.get(run.pid, ()))
        while stack:
            child = stack.pop()
            stack.extend(children.get(child, ()))
            try:
                found.append(psutil.Process(child))
            except psutil.Error:
                continue
        if found:
            run.runner.remember_descendants(found)
