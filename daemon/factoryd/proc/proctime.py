"""When a process started: with its pid, the identity that survives pid reuse.

psutil answers this too, but reads /proc/stat for the boot time on every
call, which costs about 0.7 ms, and the daemon asks on every spawn. Here
the boot time is read at most once a minute and the start comes from one
read of /proc/PID/stat (about 20 us). The formula is psutil's (boot time
plus start ticks over the clock tick), so values recorded by either agree.
"""

from __future__ import annotations

import os
import time

#: Boot time is re-read this often: it moves only when the wall clock is stepped.
BOOT_TIME_TTL = 60.0

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: (boot time, monotonic when read): a cache the loop and the journal's thread
#: both read. It is an immutable pair rebound whole, never mutated in place,
#: so a reader sees the old pair or the new one; at worst both threads re-read.
_boot: tuple[float, float] = (0.0, -BOOT_TIME_TTL)


def _boot_time() -> float:
    global _boot
    value, read_at = _boot
    now = time.monotonic()
    if now - read_at >= BOOT_TIME_TTL:
        # Imported here: the spawn helper loads this module for `stat_fields`
        # and `start_ticks` without site-packages (python -I -S).
        import psutil

        value = psutil.boot_time()
        _boot = (value, now)
    return value


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name is in parentheses and may itself contain ") ".
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 2 :].split()


def start_time(pid: int) -> float | None:
    """Wall-clock time `pid` started (psutil's create_time), or None if it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else started(fields)


def start_ticks(fields: list[bytes]) -> int | None:
    """Start time in clock ticks since boot, from parsed stat fields: field 22
    of stat (starttime), the 20th after the command name."""
    return int(fields[19]) if len(fields) >= 20 else None


def started(fields: list[bytes]) -> float | None:
    """The start time in parsed stat fields (see `stat_fields`)."""
    ticks = start_ticks(fields)
    return None if ticks is None else from_ticks(ticks)


def from_ticks(ticks: int) -> float:
    """A start time given in clock ticks since boot, as seconds since the epoch."""
    return ticks / _CLOCK_TICKS + _boot_time()


def is_zombie(fields: list[bytes]) -> bool:
    return fields[0] == b"Z"
