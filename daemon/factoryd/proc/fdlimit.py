"""The daemon's file descriptor limit, raised for itself and not for its runs.

Every running run holds three descriptors in the daemon (its two pipes'
read ends and a pidfd) and, while it prints, its log file; spawns in flight
hold four more. systemd starts services with a soft limit of 1024 (the hard
limit is far higher), so a few hundred concurrent runs would end in EMFILE:
spawns failing for a reason unrelated to the runs. The daemon raises its
own soft limit to the hard one (it waits with epoll, never select(), so
descriptors above 1024 are fine here). Its runs must not inherit that:
programs that still use select() break above 1024, which is why the
default is low. The spawn helper puts the original soft limit back for the
leaders it starts.
"""

from __future__ import annotations

import resource

#: Descriptors a running run keeps in the daemon (pipes, pidfd, log file).
PER_RUN = 4
#: Descriptors the daemon needs besides its runs (journal, sockets, spawns
#: in flight, the helper's socket, imports), with room to spare.
RESERVE = 256


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, hard
    return soft, soft


def shortfall(max_concurrent: int) -> str | None:
    """Why `max_concurrent` runs may not fit the current limit, or None."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_concurrent * PER_RUN + RESERVE
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return (
        f"max_concurrent = {max_concurrent} needs about {needed} file descriptors, "
        f"the limit is {soft}: raise LimitNOFILE (systemd) or ulimit -n"
    )
