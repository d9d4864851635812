"""Running git for the workspaces: argv lists, a clean environment, lock retries.

git's command line is used rather than a library: it is the interface
whose behaviour (locks, worktree administration, hooks, config such as
`safe.directory`) the operators and the agents themselves see, and the
Python wrappers either spawn it anyway (GitPython) or re-implement it with
different worktree and locking semantics (libgit2). Every call gets:

- an environment without the variables that would point git elsewhere
  (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, ... from a daemon started inside
  a git hook), no terminal prompts, and C-locale messages;
- settings that keep it from starting work nobody waits for or running a
  repository's own code: no `gc --auto` or maintenance (which may detach a
  background process), no commit hooks, no signing;
- a timeout, and retries with jittered exponential backoff while another
  git process holds one of the repository's lock files (`index.lock`,
  a ref's `.lock`, `packed-refs.lock`): concurrent runs on one repository
  meet there, and git itself does not wait.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from factoryd.proc.tree import WORKER_CHILDREN

#: Variables that redirect git away from the repository it is pointed at.
_REDIRECTING = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)
_SETTINGS = (
    "gc.auto=0",
    "maintenance.auto=false",
    "core.hooksPath=/dev/null",
    "commit.gpgSign=false",
    "core.fsmonitor=false",
)
_LOCKED = re.compile(r"\.lock'?: File exists|Another git process seems to be running")

DEFAULT_TIMEOUT = 300.0
#: Lock retries: first wait, longest wait, and how long to keep trying.
RETRY_FIRST = 0.02
RETRY_MAX = 1.0
RETRY_FOR = 30.0


_ADMIN_LOCKS: dict[Path, threading.Lock] = {}
_ADMIN_GUARD = threading.Lock()


def admin_lock(repo: Path) -> threading.Lock:
    """One repository's worktree administration, one thread at a time.

    git writes a new worktree's administrative files (`.git/worktrees/NAME`)
    without a lock, and a concurrent `worktree add` or `branch -D` that lists
    the worktrees meanwhile fails ("failed to read .../commondir"). Adding,
    removing and pruning worktrees and deleting branches are quick and are
    serialized per repository here; checkouts and commits run in parallel.
    """
    with _ADMIN_GUARD:
        return _ADMIN_LOCKS.setdefault(repo, threading.Lock())


class GitError(Exception):
    """A git command failed; the message is one line an operator can act on."""


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str
    #: How many times a held lock made the command wait and try again.
    lock_retries: int = 0


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment made safe for git (see the module docstring)."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()}
    for name in _REDIRECTING:
        env.pop(name, None)
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C", GIT_OPTIONAL_LOCKS="0")
    return env


class Git:
    """Runs `git` with the house settings; `check=True` raises GitError on failure."""

    def __init__(
        self,
        executable: str = "git",
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self.executable = executable
        self.env = git_env(env)
        self.timeout = timeout
        self.retry_for = retry_for
        self._random = random.Random()  # noqa: S311 - jitter, not secrets
        #: Lock retries over this object's life (the benchmark and tests read it).
        self.lock_retries = 0

    def argv(self, cwd: Path, args: Sequence[str]) -> list[str]:
        argv = [self.executable, "-C", str(cwd)]
        for setting in _SETTINGS:
            argv += ["-c", setting]
        return [*argv, *args]

    def run(
        self,
        cwd: Path,
        *args: str,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> GitResult:
        argv = self.argv(cwd, args)
        full_env = {**self.env, **env} if env else self.env
        deadline = time.monotonic() + self.retry_for
        wait = RETRY_FIRST
        retries = 0
        while True:
            try:
                done = _run(argv, full_env, self.timeout)
            except FileNotFoundError:
                raise GitError(f"git is not installed (no {self.executable!r} on PATH)") from None
            except subprocess.TimeoutExpired:
                raise GitError(
                    f"{what or 'git ' + args[0]} did not finish within {self.timeout:g}s"
                ) from None
            except OSError as exc:
                raise GitError(f"cannot run git: {exc.strerror or exc}") from None
            locked = done.returncode != 0 and _LOCKED.search(done.stderr) is not None
            if locked and time.monotonic() + wait < deadline:
                retries += 1
                self.lock_retries += 1
                time.sleep(wait * (0.5 + self._random.random() / 2))
                wait = min(wait * 2, RETRY_MAX)
                continue
            result = GitResult(done.returncode, done.stdout, done.stderr, retries)
            if check and done.returncode != 0:
                raise GitError(f"{what or 'git ' + args[0]} failed: {first_error(done.stderr)}")
            return result


def _run(argv: list[str], env: dict[str, str], timeout: float) -> GitResult:
    """One git process, registered as a worker's child from its fork until it
    is collected, so the daemon's stray sweeps never reap it first
    (`proc.tree.WorkerChildren` says why that matters)."""
    proc = WORKER_CHILDREN.popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # a timeout stops git and the children it started
    )
    with owned(proc.pid):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return GitResult(proc.returncode, out, err)


@contextlib.contextmanager
def owned(pid: int) -> Iterator[None]:
    """Forget a worker's child once its thread is done with it (see `_run`)."""
    try:
        yield
    finally:
        WORKER_CHILDREN.done(pid)


def first_error(stderr: str) -> str:
    """The line of git's stderr that says what went wrong, cut to fit one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = next(
        (line for line in lines if line.startswith(("fatal:", "error:"))),
        lines[-1] if lines else "no message",
    )
    return chosen if len(chosen) <= 300 else chosen[:297] + "..."
