"""Stopping a run and leaving nothing of it behind.

Stopping is: SIGTERM to the process group, the run's `stop_grace` for it to
exit, SIGKILL to the group, then SIGKILL to every descendant we know of that
left the group with `setsid` (seen by the reconciler's descendant scans,
found again at stop time, or re-parented to the daemon as a subreaper).
Clean-up after any end kills leftover group members and escaped
descendants, and waits until they are really gone, so that "the run is
over" means that no process of it is left. These steps are the runner's
most delicate code and need no runner state beyond what is passed in.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Iterable

import anyio
import psutil

from factoryd.core.outcome import RunResult
from factoryd.proc import tree
from factoryd.proc.capture import RunLog
from factoryd.proc.process import Child

#: How long leftover group members get after the leader exited on its own.
LEFTOVER_GRACE = 2.0

#: Descendants seen alive, by pid (psutil checks pid and start time on use).
Known = dict[int, psutil.Process]


def remember(known: Known, procs: Iterable[psutil.Process]) -> None:
    for proc in procs:
        known.setdefault(proc.pid, proc)


async def terminate(
    child: Child,
    known: Known,
    wait: Callable[[], Awaitable[object]],
    result: RunResult,
    grace: float,
    log: RunLog,
) -> None:
    """SIGTERM the group, wait the grace, then SIGKILL the group and every descendant."""
    remember(known, tree.descendants(child.pid))
    tree.signal_group(child.pid, signal.SIGTERM)
    escaped = 0
    for proc in list(known.values()):
        escaped += _signal_escaped(proc, child.pid, signal.SIGTERM)
    result.orphans_killed += escaped
    with anyio.move_on_after(grace) as waited:
        await wait()
    if not waited.cancelled_caught:
        return
    remember(known, tree.descendants(child.pid))
    tree.signal_group(child.pid, signal.SIGKILL)
    tree.kill_processes(known.values())
    result.sigkilled = True
    log.note(f"SIGKILL after {grace:g}s grace")
    await wait()


def left_behind(child: Child, known: Known, result: RunResult, stopped: bool) -> bool:
    """Whether `clean_up` has anything to do. Most runs end alone: the group
    is gone, no descendant was ever seen, nothing was stopped or killed, and
    then the clean-up (and the shielded scope it needs) is skipped."""
    return tree.group_alive(child.pid) or bool(known) or result.sigkilled or stopped


async def clean_up(
    child: Child, known: Known, result: RunResult, grace: float, run_id: str, stopped: bool
) -> None:
    """Leave nothing behind: leftover group members, escaped descendants, orphans."""
    pgid = child.pid
    leftovers = tree.signal_group(pgid, signal.SIGTERM)
    if leftovers:
        with anyio.move_on_after(min(LEFTOVER_GRACE, grace)):
            while tree.group_alive(pgid):
                await anyio.sleep(0.02)
                tree.reap_orphan_zombies()
        if tree.signal_group(pgid, signal.SIGKILL):
            result.sigkilled = True
    escaped = [p for p in known.values() if alive(p)]
    # Looking for orphans re-parented to us costs a /proc read per run; a run
    # that exited cleanly, alone in its group, with no known descendants is
    # left to the reconciler's periodic scan, which reaps strays within 5 s.
    if leftovers or escaped or known or result.sigkilled or stopped:
        escaped += tree.orphans_of_run(run_id)
    killed = tree.kill_processes(escaped)
    if killed:
        # SIGKILL is not instant: wait (briefly) until they are really gone, so
        # that "the run is over" means no process of it is left.
        with anyio.move_on_after(1.0):
            while any(alive(p) for p in escaped):
                await anyio.sleep(0.005)
    for proc in escaped:
        tree.reap_pid(proc.pid)
    result.orphans_killed += killed


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_escaped(proc: psutil.Process, run_pgid: int, sig: int) -> int:
    """Signal a descendant that left the run's group, with the group it leads.

    Returns 1 if it had escaped (and was signalled), 0 if it is in the run's
    group (the group signal reaches it) or gone.
    """
    try:
        pgid = os.getpgid(proc.pid)
        if pgid == run_pgid:
            return 0
        if pgid == proc.pid:
            tree.signal_group(pgid, sig)
        else:
            proc.send_signal(sig)
    except (psutil.Error, OSError):
        return 0
    return 1
