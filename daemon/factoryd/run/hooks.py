"""Workspace hooks: the operator's programs at fixed points of a run's workspace.

`after_create` (install dependencies), `before_run`, `after_run` (run the
tests: with `success_check` its exit status is the run's verdict) and
`before_remove` (push the branch) are argv lists, never passed through a
shell (an operator who wants one writes `sh -c` themselves). Each runs in
the worktree, in a new session so that a timeout kills its whole process
group, with stdin from /dev/null, and its output appended to the run's log
between two `[factoryd]` lines, capped so a noisy hook cannot fill the disk.
Hooks are blocking calls: the daemon runs them on a worker thread, never on
its loop.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from factoryd.core.workspace_spec import Hook
from factoryd.proc.tree import WORKER_CHILDREN
from factoryd.run.gitcmd import owned

#: Output kept per hook in the run log; the rest is counted.
HOOK_OUTPUT_CAP = 1024 * 1024
#: After a timeout: SIGTERM to the group, this long, then SIGKILL.
KILL_GRACE = 2.0
#: After the hook exits, how long its group's leftovers may hold the pipe.
DRAIN_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class HookResult:
    name: str
    exit_status: int | None
    duration: float
    timed_out: bool = False
    #: Why it could not start (missing program, bad cwd), in one line.
    error: str | None = None
    bytes_dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.exit_status == 0

    def describe(self) -> str:
        """How it ended, in words a reason can carry."""
        if self.error is not None:
            return f"{self.name} could not start: {self.error}"
        if self.timed_out:
            return f"{self.name} timed out after {self.duration:.1f}s"
        if self.exit_status is not None and self.exit_status < 0:
            return f"{self.name} killed by signal {-self.exit_status}"
        return f"{self.name} exited {self.exit_status}"


class _LogAppender:
    """Appends to the run log (made on first write), at most `cap` bytes of output."""

    def __init__(self, path: Path | None, cap: int) -> None:
        self.path = path
        self.room = cap
        self.dropped = 0
        self._file: BinaryIO | None = None
        self._failed = path is None

    def _open(self) -> BinaryIO | None:
        if self._file is None and not self._failed and self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab", buffering=0)
            except OSError:
                self._failed = True
        return self._file

    def note(self, text: str) -> None:
        file = self._open()
        if file is not None:
            file.write(f"[factoryd] {text}\n".encode())

    def output(self, data: bytes) -> None:
        keep = data[: max(self.room, 0)]
        self.dropped += len(data) - len(keep)
        self.room -= len(keep)
        file = self._open()
        if keep and file is not None:
            file.write(keep)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def run_hook(
    name: str,
    hook: Hook,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path | None,
    *,
    cap: int = HOOK_OUTPUT_CAP,
) -> HookResult:
    """Run one hook to completion or its timeout; its output goes to `log_path`."""
    log = _LogAppender(log_path, cap)
    log.note(f"hook {name}: {' '.join(hook.argv)}")
    t0 = time.monotonic()
    try:
        proc = WORKER_CHILDREN.popen(
            hook.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, ValueError) as exc:
        error = getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, FileNotFoundError) and exc.filename == hook.argv[0]:
            error = f"no such program: {hook.argv[0]}"
        log.note(f"hook {name} could not start: {error}")
        log.close()
        return HookResult(name, None, time.monotonic() - t0, error=error)
    with owned(proc.pid):  # not a stray for the daemon's reaper to collect
        timed_out = _pump(proc, log, deadline=t0 + hook.timeout)
        if timed_out:
            _kill_group(proc)
        else:
            # Whatever the hook left in its group goes with it (its leader is
            # not reaped yet, so the group id cannot belong to anyone else).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait()
    duration = time.monotonic() - t0
    if log.dropped:
        log.note(f"hook {name}: {log.dropped} more bytes of output counted, not kept")
    result = HookResult(name, status, duration, timed_out=timed_out, bytes_dropped=log.dropped)
    log.note(f"hook {result.describe()} after {duration:.2f}s")
    log.close()
    return result


def _pump(proc: subprocess.Popen[bytes], log: _LogAppender, deadline: float) -> bool:
    """Copy output until EOF; True when the deadline came first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return True
                if exited_at is None and _exited(proc.pid):
                    exited_at = now
                if exited_at is not None and now - exited_at > DRAIN_GRACE:
                    return False  # a leftover of its group holds the pipe
                wait = min(deadline - now, 0.1 if exited_at is None else DRAIN_GRACE)
                if not sel.select(wait):
                    continue
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    return False
                log.output(data)
        finally:
            proc.stdout.close()


def _exited(pid: int) -> bool:
    """The leader has exited (checked without reaping it: its group id stays ours)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """After a timeout: SIGTERM to the group, a grace, then SIGKILL to what is left."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline and not _exited(pgid):
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
