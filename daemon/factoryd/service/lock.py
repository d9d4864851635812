"""One daemon per state dir: an exclusive lock held for the daemon's life.

Two daemons on one state dir adopt each other's runs, fight over the
control socket and kill each other's work when one stops. So the very
first thing `factoryd run` does with its state dir, before the journal,
the socket, the spool or any run, is take an exclusive `flock` on
`STATE_DIR/daemon.lock`. The kernel frees it when the process dies, however
it dies (kill -9 included): a stale lock file is never a problem, only a
live holder is. The holder writes its pid into the file so that a refused
second daemon can say who holds it.

The descriptor is close-on-exec, so no run or spawn helper inherits the
lock and keeps it after the daemon is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "daemon.lock"


class StateDirLocked(Exception):
    """Another live daemon holds the state dir; the message names it and its pid."""


class StateLock:
    """The held lock; `release` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _holder(fd: int, wait: float) -> str:
    """The pid the holder wrote (it writes right after locking: wait a moment)."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError, ValueError):
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return text
        if time.monotonic() >= deadline:
            return "unknown"
        time.sleep(0.01)


def acquire(state_dir: Path) -> StateLock:
    """Take the state dir's lock or raise StateDirLocked (or OSError: cannot open)."""
    path = state_dir / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd, 0.5)
        os.close(fd)
        raise StateDirLocked(
            f"state_dir {state_dir} is in use by another factoryd (pid {pid}); "
            "stop it first, or give this one another state_dir"
        ) from None
    except OSError:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the pid is not shown
    return StateLock(path, fd)
