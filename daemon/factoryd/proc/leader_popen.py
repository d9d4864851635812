"""How a run leader is started with Popen, in one place for its two users.

The spawn helper (a separate process, `spawnhelper.py`) starts leaders this
way, and so does the daemon itself when the helper is not available. The
helper runs outside the package and loads this file as a plain module, so
it imports nothing from `daemon`.
"""

from __future__ import annotations

import errno
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
    only `keep` (the read ends of those pipes, which the leader holds).

    A request that cannot be carried out (an empty argv, a NUL byte, an env
    name with `=`) raises OSError(EINVAL): that run fails, nothing else."""
    problem = invalid_request(argv, env, cwd)
    if problem is not None:
        raise OSError(errno.EINVAL, problem)
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


def invalid_request(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str | None:
    """Why exec could not take this argv, env and workdir (None: it can)."""
    if not argv or not isinstance(argv[0], str) or not argv[0]:
        return "empty program"
    for i, arg in enumerate(argv):
        if not isinstance(arg, str) or "\0" in arg:
            return f"argv[{i}]: a NUL byte or not text"
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            return "env: a name that is empty or holds '=' or a NUL byte"
        if not isinstance(value, str) or "\0" in value:
            return f"env {name}: a NUL byte or not text"
    if not isinstance(cwd, str) or "\0" in cwd:
        return "cwd: a NUL byte or not text"
    return None
