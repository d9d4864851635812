"""Process primitives: spawn in a new session, wait by pidfd, kill the whole tree.

Why these choices:

* Every run is a session (and process-group) leader, so one `killpg`
  reaches everything it started that did not call `setsid` itself.
* Exits are seen through a pidfd registered with the event loop: no thread
  per child (asyncio's default watcher in 3.11 spends one), and a
  grandchild that keeps the output pipe open cannot hide the exit.
* The daemon makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so
  a descendant that double-forks with `setsid` is re-parented to us rather
  than to init; each run's environment carries `FACTORYD_RUN_ID`, which
  such a descendant inherits, so we can tell whose it was and kill it.
* Nothing here ever calls `waitpid(-1)`: that would steal exit statuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil

RUN_ID_ENV = "FACTORYD_RUN_ID"
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to this process. Best effort."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class SpawnError(Exception):
    """The run could not start; the message is the reason an operator reads."""


@dataclass(slots=True)
class Child:
    """A started run: its leader process and the pidfd that reports its exit."""

    proc: subprocess.Popen[bytes]
    pidfd: int
    create_time: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def spawn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    stdin_path: str | None = None,
) -> Child:
    """Start `argv` (never through a shell) as the leader of a new session."""
    if not argv:
        raise SpawnError("empty argv")
    if not Path(cwd).is_dir():
        raise SpawnError(f"workdir {cwd} does not exist or is not a directory")
    stdin: int | object = subprocess.DEVNULL
    opened = None
    try:
        if stdin_path is not None:
            opened = Path(stdin_path).open("rb")  # noqa: SIM115 - closed below
            stdin = opened
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=stdin,  # type: ignore[arg-type]
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError:
            raise SpawnError(f"executable not found: {argv[0]}") from None
        except PermissionError:
            raise SpawnError(f"permission denied executing {argv[0]} in {cwd}") from None
        except OSError as exc:
            raise SpawnError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    finally:
        if opened is not None:
            opened.close()
    pidfd = os.pidfd_open(proc.pid)
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        create_time = 0.0
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
    return Child(proc=proc, pidfd=pidfd, create_time=create_time)


async def wait_exit(child: Child) -> int:
    """Wait for the leader to exit and reap it; return its wait status code.

    Negative values are signals, as in `Popen.returncode`.
    """
    while child.proc.poll() is None:
        await anyio.wait_readable(child.pidfd)
    return child.proc.returncode


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


def reap_orphans(known_pids: set[int]) -> list[tuple[int, str | None]]:
    """Reap zombies re-parented to us that are not run leaders we track.

    Returns (pid, run id marker) of each reaped process.
    """
    reaped: list[tuple[int, str | None]] = []
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return reaped
    for proc in children:
        if proc.pid in known_pids:
            continue
        try:
            status = proc.status()
        except psutil.Error:
            continue
        if status == psutil.STATUS_ZOMBIE:
            try:
                os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                continue
            reaped.append((proc.pid, None))
    return reaped


def orphans_of_run(run_id: str, known_pids: set[int]) -> list[psutil.Process]:
    """Live processes re-parented to us that carry this run's marker."""
    found: list[psutil.Process] = []
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return found
    for proc in children:
        if proc.pid in known_pids:
            continue
        if run_marker(proc) == run_id:
            found.append(proc)
            found.extend(descendants(proc.pid))
    return found


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


def errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))
