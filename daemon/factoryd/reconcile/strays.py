"""Processes that outlive their runs: find them, remember them, kill them.

Two sweeps with different costs, both run from the reconciler's loop:

* `reap_strays` (every 5 s while runs live): read the daemon's own children
  list (cheap); anything there that is not a run leader was re-parented to
  us (we are a subreaper) and is killed and reaped once its run is over;
* `track_descendants` (every 60 s): one full /proc pass that remembers each
  live run's descendants, so one that later leaves its group with setsid
  is still known when the run is stopped.
"""

from __future__ import annotations

from typing import Any

import psutil

from factoryd.proc import process
from factoryd.reconcile.runstate import ActiveRun


def reap_strays(runs: dict[str, ActiveRun], metrics: Any, log: Any) -> int:
    """Kill and reap processes re-parented to us whose run is over; return how many."""
    leaders = {run.pid for run in runs.values() if run.pid is not None}
    strays = []
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
    killed = process.kill_processes(strays)
    for proc in strays:
        process.reap_pid(proc.pid)
    metrics.orphans_reaped.inc(killed)
    log.warning("orphans.reaped", count=killed)
    return killed


def track_descendants(runs: dict[str, ActiveRun]) -> None:
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
