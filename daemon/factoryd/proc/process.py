"""Process primitives: start a leader in a new session, learn its exit, kill the whole tree.

Why these choices:

* Leaders are started by the spawn helper (`spawner`), off the loop; Popen
  on the loop is the fallback. Either way each run is a session (and
  process-group) leader, so one `killpg` reaches everything it started
  that did not call `setsid` itself.
* Exits come from the helper's report, or from a pidfd registered with the
  event loop for leaders that are our own children: no thread per child
  (asyncio's default watcher in 3.11 spends one), and a grandchild that
  keeps the output pipe open cannot hide the exit.
* What lies beyond the leader (its group, escaped descendants, orphans
  re-parented to the daemon as a subreaper) is tree.py's; its names are
  re-exported here for the callers that think of "the process layer".
* Each leader inherits the read ends of its own stdout and stderr pipes
  (it never reads them). If the daemon dies, the pipes keep a reader, so the
  agent's writes fill the pipe buffer and block instead of killing it with
  SIGPIPE; a restarted daemon reopens the same pipes through
  /proc/PID/fd/N and resumes reading where the dead one stopped.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from factoryd.proc import proctime
from factoryd.proc.leader_popen import popen_leader
from factoryd.proc.spawner import HelperUnavailable, Spawner
from factoryd.proc.spawnlog import SpawnLog
from factoryd.proc.tree import (
    LEADERS,
    RUN_ID_ENV,
    become_subreaper,
    descendants,
    describe_status,
    direct_children,
    group_alive,
    kill_processes,
    orphans_of_run,
    reap_orphan_zombies,
    reap_pid,
    run_marker,
    signal_group,
)

STATE_DIR_ENV = "FACTORYD_STATE_DIR"


class SpawnError(Exception):
    """The run could not start; the message is the reason an operator reads."""


@dataclass(slots=True)
class Child:
    """A run's leader process and the pidfd that reports its exit.

    Its exit status comes from Popen (`popen`, started here), from the spawn
    helper (`helper`), or not at all: a process adopted after a daemon
    restart (`popen` and `helper` None) is nobody's child we can ask.
    """

    pid: int
    pidfd: int
    popen: subprocess.Popen[bytes] | None = None
    helper: Spawner | None = None
    #: Start time (seconds since the epoch), where the spawn told it.
    create_time: float | None = None
    #: Our read ends of the run's stdout and stderr (None: not attached).
    out_fd: int | None = None
    err_fd: int | None = None
    #: The fd numbers under which the leader itself holds those read ends.
    leader_fds: tuple[int, int] | None = None

    def pipes(self) -> list[tuple[str, int]]:
        return [
            (name, fd)
            for name, fd in (("stdout", self.out_fd), ("stderr", self.err_fd))
            if fd is not None
        ]

    @property
    def adopted(self) -> bool:
        return self.popen is None and self.helper is None

    def poll(self) -> tuple[bool, int | None]:
        """(exited, status) without blocking; the status follows Popen: the exit
        code, or -N for signal N, and None when it is unknowable."""
        if self.helper is not None:
            return self.helper.exit_code(self.pid)
        if self.popen is not None:
            code = self.popen.poll()
            return code is not None, code
        return True, None

    def close(self) -> None:
        LEADERS.discard(self.pid)
        if self.helper is not None:
            self.helper.forget(self.pid)
        for fd in (self.pidfd, self.out_fd, self.err_fd):
            if fd is not None:
                try:  # noqa: SIM105 - not suppress(): a context manager per fd per run
                    os.close(fd)
                except OSError:
                    pass


def same_process(pid: int, create_time: float | None) -> bool:
    """True if `pid` is alive and is the process that started at `create_time`.

    A pid alone is not an identity: it is reused. The start time is.
    """
    if create_time is None:
        return False
    fields = proctime.stat_fields(pid)
    if fields is None:
        return False
    started = proctime.started(fields)
    return (
        started is not None and abs(started - create_time) < 0.02 and not proctime.is_zombie(fields)
    )


def adopt(pid: int, create_time: float, leader_fds: tuple[int, int] | None = None) -> Child | None:
    """Watch a process a previous daemon started, if it is still that process.

    With `leader_fds`, reopen its output pipes from the leader's own copies.
    """
    if not same_process(pid, create_time):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if not same_process(pid, create_time):  # it died (and the pid was reused) meanwhile
        os.close(pidfd)
        return None
    child = Child(pid=pid, pidfd=pidfd, leader_fds=leader_fds)
    if leader_fds is not None:
        child.out_fd = _reopen_pipe(pid, leader_fds[0])
        child.err_fd = _reopen_pipe(pid, leader_fds[1])
    return child


def _reopen_pipe(pid: int, fd: int) -> int | None:
    try:
        opened = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISFIFO(os.fstat(opened).st_mode):
        os.close(opened)
        return None
    return opened


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One /dev/null descriptor for every run's stdin (Popen's DEVNULL opens one per spawn)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


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
    stdin: int | object = _devnull()
    opened = None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ok = False
    try:
        if stdin_path is not None:
            try:
                opened = Path(stdin_path).open("rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise _spawn_error(exc, argv, cwd, stdin_path) from None
            stdin = opened
        try:
            proc = popen_leader(
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin,  # type: ignore[arg-type]
                stdout=out_w,
                stderr=err_w,
                keep=(out_r, err_r),
            )
        except OSError as exc:
            raise _spawn_error(exc, argv, cwd, stdin_path) from None
        ok = True
    finally:
        if opened is not None:
            opened.close()
        os.close(out_w)
        os.close(err_w)
        if not ok:
            os.close(out_r)
            os.close(err_r)
    pidfd = os.pidfd_open(proc.pid)
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
    LEADERS.add(proc.pid)
    return Child(
        pid=proc.pid,
        pidfd=pidfd,
        popen=proc,
        out_fd=out_r,
        err_fd=err_r,
        leader_fds=(out_r, err_r),
    )


async def start(
    helper: Spawner | None,
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    stdin_path: str | None = None,
    record: tuple[str, SpawnLog] | None = None,
) -> Child:
    """Start a run leader through the spawn helper, or with `spawn` (on the loop)
    where there is none. `record`: (run id, spawn log) to note the spawn in the
    moment the process exists (by the helper, or here right after Popen)."""
    if helper is None or not helper.available or not argv:
        return _spawn_recorded(argv, cwd, env, stdin_path, record)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid, pidfd, leader_fds, ticks = await helper.spawn(
            argv,
            cwd=cwd,
            env=env,
            stdin_path=stdin_path,
            fds=(out_w, err_w, out_r, err_r),
            record=None if record is None else (record[0], str(record[1].path)),
        )
    except BaseException as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        if isinstance(exc, HelperUnavailable):  # nothing was sent: Popen's turn
            return _spawn_recorded(argv, cwd, env, stdin_path, record)
        if isinstance(exc, OSError):
            raise _spawn_error(exc, argv, cwd, stdin_path) from None
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
    if record is not None:
        record[1].written(record[0], pid, leader_fds)  # the helper wrote the line
    return Child(
        pid=pid,
        pidfd=pidfd,
        helper=helper,
        create_time=None if ticks is None else proctime.from_ticks(ticks),
        out_fd=out_r,
        err_fd=err_r,
        leader_fds=leader_fds,
    )


def _spawn_recorded(
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    stdin_path: str | None,
    record: tuple[str, SpawnLog] | None,
) -> Child:
    child = spawn(argv, cwd=cwd, env=env, stdin_path=stdin_path)
    if record is not None:
        record[1].record(record[0], child.pid, child.leader_fds)
    return child


def _spawn_error(exc: OSError, argv: Sequence[str], cwd: str, stdin_path: str | None) -> SpawnError:
    """The reason an operator reads, whichever way the spawn failed."""
    if stdin_path is not None and exc.filename == stdin_path:
        return SpawnError(f"cannot open stdin file {stdin_path}: {exc.strerror}")
    if exc.filename == cwd:
        return SpawnError(f"workdir {cwd} does not exist or is not a directory")
    if isinstance(exc, FileNotFoundError):
        return SpawnError(f"executable not found: {argv[0]}")
    if isinstance(exc, PermissionError):
        return SpawnError(f"permission denied executing {argv[0]} in {cwd}")
    return SpawnError(f"cannot start {argv[0]}: {exc.strerror or exc}")


__all__ = [
    "LEADERS",
    "RUN_ID_ENV",
    "STATE_DIR_ENV",
    "Child",
    "SpawnError",
    "adopt",
    "become_subreaper",
    "descendants",
    "describe_status",
    "direct_children",
    "group_alive",
    "kill_processes",
    "orphans_of_run",
    "reap_orphan_zombies",
    "reap_pid",
    "run_marker",
    "same_process",
    "signal_group",
    "spawn",
    "start",
]
