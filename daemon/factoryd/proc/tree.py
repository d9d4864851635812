"""The process tree beyond a run's leader: groups, descendants, orphans, reaping.

Why these choices:

* The daemon makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so
  a descendant that double-forks with `setsid` is re-parented to us rather
  than to init; each run's environment carries `FACTORYD_RUN_ID`, which
  such a descendant inherits, so we can tell whose it was and kill it.
* A process is named by pid *and* start time (psutil checks both), because
  a pid alone is reused.
* Nothing here ever calls `waitpid(-1)`: that would steal exit statuses
  that belong to a runner. Our own children that are run leaders are told
  apart from orphans by `LEADERS`, without reading /proc for each.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

RUN_ID_ENV = "FACTORYD_RUN_ID"
_PR_SET_CHILD_SUBREAPER = 36


#: Pids of the run leaders this process spawned and still watches. It mirrors
#: the kernel's own table of our children for one purpose: telling run leaders
#: from orphans re-parented to us, without reading /proc for each. The loop
#: alone reads and writes it; another thread asks the kernel instead
#: (`unreaped_child`).
LEADERS: set[int] = set()


class WorkerChildren:
    """Children that worker threads start and wait for themselves (git, hooks).

    The daemon is a subreaper and collects the zombies of children it does not
    know; one of these collected first would report exit status 0 to its
    thread (Python's answer to ECHILD), so a failed git command would pass.
    Their pids are registered under a lock held across the fork, and every
    sweep that may reap or kill holds the same lock while it looks (or skips
    its round when a fork is under way), so no child is taken between its
    fork and its registration. One instance per daemon, `WORKER_CHILDREN`:
    the lock is what makes it safe to share between threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen`, with the child registered before anyone can reap it."""
        with self._lock:
            proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
            self._pids.add(proc.pid)
        return proc

    def done(self, pid: int) -> None:
        """The thread has collected its child (or given it up): forget the pid."""
        with self._lock:
            self._pids.discard(pid)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[frozenset[int] | None]:
        """The registered pids, with no fork in flight while the caller looks;
        None when a fork is under way (the caller skips this round)."""
        if not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            yield frozenset(self._pids)
        finally:
            self._lock.release()


WORKER_CHILDREN = WorkerChildren()


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to this process. Best effort."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        status: int = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # ctypes: untyped
        return status == 0
    except (OSError, AttributeError):
        return False


def unreaped_child(pid: int) -> bool:
    """True while `pid` is a child of this process that nobody has reaped yet
    (running, or exited and still a zombie), so its pid cannot have been
    reused. Asks the kernel (waitid with WNOWAIT: nothing is collected), so
    it is safe from any thread."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, OSError):
        return False
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of `pid` (empty if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def run_marker(proc: psutil.Process) -> str | None:
    """The FACTORYD_RUN_ID a process inherited, if we may read it."""
    try:
        return proc.environ().get(RUN_ID_ENV)
    except (psutil.Error, OSError):
        return None


def kill_processes(procs: Iterable[psutil.Process], sig: int = signal.SIGKILL) -> int:
    """Signal each still-living process (checked by pid AND create time)."""
    count = 0
    for proc in procs:
        try:
            if proc.is_running():
                proc.send_signal(sig)
                count += 1
        except psutil.Error:
            continue
    return count


def direct_children() -> list[int]:
    """Pids of our own children, from /proc/self/task/*/children (cheap: no full
    /proc scan); psutil's scan where the kernel does not offer that file."""
    pids: list[int] = []
    try:
        for task in Path("/proc/self/task").iterdir():
            pids.extend(int(x) for x in (task / "children").read_text().split())
    except (OSError, ValueError):
        try:
            return [p.pid for p in psutil.Process().children()]
        except psutil.Error:
            return []
    return pids


def orphans_of_run(run_id: str) -> list[psutil.Process]:
    """Live processes re-parented to us (we are a subreaper) that carry this run's marker.

    Run leaders are skipped by pid without reading their environment, so the
    cost is one small /proc read when nothing escaped.
    """
    found: list[psutil.Process] = []
    for pid in direct_children():
        if pid in LEADERS:
            continue
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            continue
        if run_marker(proc) == run_id:
            found.append(proc)
            found.extend(descendants(pid))
    return found


def reap_orphan_zombies() -> None:
    """Collect the exit status of dead processes re-parented to us (never of a
    run leader, whose status belongs to its runner). Without this, a killed
    group member stays a zombie and its group looks alive."""
    with WORKER_CHILDREN.quiet() as workers:
        if workers is None:
            return  # a worker is forking: the next sweep reaps what this one leaves
        for pid in direct_children():
            if pid not in LEADERS and pid not in workers:
                reap_pid(pid)


def reap_pid(pid: int) -> None:
    """Collect one specific child's status, ignoring a pid that is not ours."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def describe_status(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"
