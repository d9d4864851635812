"""How a run leader is started with Popen, in one place for its two users.

The spawn helper (a separate process, `spawnhelper.py`) starts leaders this
way, and so does the daemon itself when the helper is not available. The
helper runs outside the package and loads this file as a plain module, so
it imports nothing from `daemon`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, Any


def popen_leader(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    stdin: int | IO[Any],
    stdout: int,
    stderr: int,
    keep: tuple[int, int],
) -> subprocess.Popen[bytes]:
    """A leader of a new session, from an argv (never a shell), with only `env`,
    stdout and stderr into the run's pipes, and, of the parent's descriptors,
    only `keep` (the read ends of those pipes, which the leader holds)."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        close_fds=True,
        pass_fds=keep,
    )
