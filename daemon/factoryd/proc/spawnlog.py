"""The spawn log: a spawn's durable record until the journal has it.

A run's journal record is committed before its spawn, but its pid reaches
the journal only with the next group commit. A daemon that dies in between
must still learn that the run spawned (and its pid, to adopt it or to call
its end `exit_unknown` instead of re-running finished work). So every spawn
appends one line, `RUN_ID PID OUT_FD ERR_FD`, to this file, in a
single write on a descriptor kept open: no file is created or removed per
run (a pid file per run cost two directory updates, which a busy disk makes
slow). Lines whose pid the journal has committed are obsolete; once the
file passes `COMPACT_AT` bytes it is rewritten with only the others.

No fsync: the log guards against the daemon dying, not the machine (after
a reboot no run survives anyway).

Leaders started by the spawn helper are appended by the helper itself, by
path, before it answers (`written` then keeps the line pending here); so a
compaction waits until no spawn is in flight (`busy`), and the helper opens
the file anew for each line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

COMPACT_AT = 1 << 20


@dataclass(frozen=True, slots=True)
class Spawned:
    pid: int
    leader_fds: tuple[int, int] | None
    #: Not known at the spawn (see runner.StartedCallback); only pid files
    #: of older versions carry it.
    start_time: float | None = None


def spawn_line(run_id: str, pid: int, fds: tuple[int, int] | None) -> bytes:
    """One spawn as the log keeps it (also written by the spawn helper, which
    loads this module from beside its own file: stdlib imports only here)."""
    out_fd, err_fd = fds or (-1, -1)
    return f"{run_id} {pid} {out_fd} {err_fd}\n".encode()


class SpawnLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        #: Lines of spawns whose pid the journal has not committed yet.
        self._pending: dict[str, bytes] = {}
        #: True while the spawn helper may be writing lines (spawns in flight):
        #: no compaction may replace the file under it then.
        self.busy: Callable[[], bool] = lambda: False

    def record(self, run_id: str, pid: int, fds: tuple[int, int] | None) -> None:
        """Best effort: a failed write costs the crash-recovery aid, never the run."""
        line = spawn_line(run_id, pid, fds)
        self._pending[run_id] = line
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
                )
            os.write(self._fd, line)
        except OSError:
            pass

    def written(self, run_id: str, pid: int, fds: tuple[int, int] | None) -> None:
        """The spawn helper appended this spawn's line itself: keep it pending."""
        self._pending[run_id] = spawn_line(run_id, pid, fds)

    def journaled(self, run_ids: Iterable[str]) -> None:
        """These runs' pids are committed: their lines may go at the next compaction."""
        for run_id in run_ids:
            self._pending.pop(run_id, None)
        if self.busy():
            return  # the helper may be appending a line we do not know of yet
        with contextlib.suppress(OSError):
            # The helper writes by path: the file may exist without our descriptor.
            size = os.fstat(self._fd).st_size if self._fd is not None else self.path.stat().st_size
            if size >= COMPACT_AT:
                self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(self._pending.values()))
        tmp.replace(self.path)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_spawn_log(path: Path) -> dict[str, Spawned]:
    """Every run the log names, by id (a later line wins). Torn or garbled
    lines (a daemon killed mid-write) are skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    found: dict[str, Spawned] = {}
    for line in data.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        try:
            run_id = parts[0].decode()
            pid, out_fd, err_fd = int(parts[1]), int(parts[2]), int(parts[3])
        except (UnicodeDecodeError, ValueError):
            continue
        found[run_id] = Spawned(pid, (out_fd, err_fd) if out_fd >= 0 else None)
    return found
