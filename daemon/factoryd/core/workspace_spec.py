"""What a run's git workspace is, named safely, decided purely.

A task with a `workspace` runs in its own `git worktree` of a repository,
on a new branch, and leaves its work behind as a commit on that branch.
This module holds the parts that need no git and no files: the immutable
`WorkspaceSpec` read from config, the names (branch and directory) made
from task and run id so that nothing a task name contains can escape the
workspace root or make an invalid ref, the placeholder expansion of the
commit message, and the two small decisions taken when a run ends (what a
`success_check` makes of the outcome, whether `keep` keeps the branch).
The shell side (git, hooks, records) is `factoryd.run.workspace`.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from factoryd.core.outcome import Outcome


class Keep(enum.StrEnum):
    """What becomes of a run's branch once its worktree is removed."""

    ALWAYS = "always"
    ON_SUCCESS = "on-success"
    NEVER = "never"


HOOK_NAMES = ("after_create", "before_run", "after_run", "before_remove")

#: Placeholders of the branch pattern and the commit message (no format(): a
#: task name cannot reach attributes or other values through them).
PLACEHOLDERS = ("{task}", "{run_id}", "{arm}", "{outcome}")
DEFAULT_BRANCH = "factoryd/{task}/{run_id}"
DEFAULT_MESSAGE = "factoryd: {task} run {run_id} on {arm}"
DEFAULT_AUTHOR = "factoryd <factoryd@localhost>"
DEFAULT_HOOK_TIMEOUT = 600.0
#: Longest task part of a directory or branch name; longer names are cut
#: and suffixed with a hash of the whole, so two long names stay distinct.
MAX_NAME_PART = 64


@dataclass(frozen=True, slots=True)
class Hook:
    """A program run at one point of a workspace's life: argv (no shell), time limit."""

    argv: tuple[str, ...]
    timeout: float = DEFAULT_HOOK_TIMEOUT


@dataclass(frozen=True, slots=True)
class Hooks:
    after_create: Hook | None = None
    before_run: Hook | None = None
    after_run: Hook | None = None
    before_remove: Hook | None = None


@dataclass(frozen=True, slots=True)
class WorkspaceSpec:
    """A task's `workspace` setting. `root` None: STATE_DIR/workspaces."""

    repo: str
    ref: str = "HEAD"
    branch: str = DEFAULT_BRANCH
    keep: Keep = Keep.ON_SUCCESS
    root: str | None = None
    author_name: str = "factoryd"
    author_email: str = "factoryd@localhost"
    message: str = DEFAULT_MESSAGE
    hooks: Hooks = Hooks()
    #: The exit status of `hooks.after_run` is the run's verdict.
    success_check: bool = False


def parse_author(text: str) -> tuple[str, str] | None:
    """`Name <email>` -> (name, email); None when it is not of that form."""
    name, sep, rest = text.partition("<")
    email, close, tail = rest.partition(">")
    name, email = name.strip(), email.strip()
    if not sep or not close or tail.strip() or not name or not email:
        return None
    if any(c in name + email for c in "<>\n\r\0"):
        return None
    return name, email


def safe_part(text: str) -> str:
    """A name part that is one path component and one clean ref component.

    Letters, digits, '-', '_' and '.' are kept, anything else becomes '_';
    runs of dots become one (no '..'), leading dots and a trailing '.' or
    '.lock' go. A long result is cut and suffixed with a hash of the input.
    """
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in text)
    while ".." in out:
        out = out.replace("..", ".")
    out = out.lstrip(".")
    while out.endswith((".", ".lock")):
        out = out.removesuffix(".lock").rstrip(".")
    if len(out) > MAX_NAME_PART:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        out = f"{out[: MAX_NAME_PART - 9]}-{digest}"
    return out or "_"


def expand(template: str, values: dict[str, str]) -> str:
    """Replace the known `{name}` placeholders; leave anything else as written."""
    for key in PLACEHOLDERS:
        name = key[1:-1]
        if key in template and name in values:
            template = template.replace(key, values[name])
    return template


def branch_name(pattern: str, task: str, run_id: str, arm: str) -> str:
    """The run's branch: the pattern with sanitized values (each one ref component)."""
    values = {"task": safe_part(task), "run_id": safe_part(run_id), "arm": safe_part(arm)}
    return expand(pattern, values)


def dir_name(task: str, run_id: str) -> str:
    """The worktree's directory under the root: one component, never '.' or '..'."""
    return f"{safe_part(task)}-{safe_part(run_id)}"


def ref_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name (git check-ref-format rules), or None."""
    if not name:
        return "is empty"
    if len(name) > 200:
        return "is longer than 200 characters"
    if name.startswith(("-", "/")) or name.endswith(("/", ".", ".lock")):
        return "must not start with '-' or '/' nor end with '/', '.' or '.lock'"
    bad = set(" ~^:?*[\\\x7f")
    if any(c in bad or ord(c) < 32 for c in name):
        return "must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    if ".." in name or "//" in name or "@{" in name or name == "@":
        return "must not contain '..', '//' or '@{'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "no component may start with '.' or end with '.lock'"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why a branch pattern cannot make unique, valid branch names, or None."""
    if "{run_id}" not in pattern:
        return "must contain {run_id} (every run needs a branch of its own)"
    sample = branch_name(pattern, "task", "0abc-123def", "arm")
    problem = ref_problem(sample)
    return None if problem is None else f"gives an invalid branch name ({sample!r} {problem})"


#: Outcomes where the agent finished on its own: a success_check may judge them.
#: EXIT_UNKNOWN too: an adopted run's exit status is lost, its tests are not.
JUDGED = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.EXIT_UNKNOWN})

#: Outcomes after which `after_run` is not run: nothing ran, or an operator
#: or a daemon shutdown stopped it (a test suite is no way to stop quickly).
NO_AFTER_RUN = frozenset({Outcome.SPAWN_FAILED, Outcome.CANCELLED})


def runs_after_run(outcome: Outcome) -> bool:
    return outcome not in NO_AFTER_RUN


def checked_outcome(
    outcome: Outcome, reason: str, passed: bool, detail: str
) -> tuple[Outcome, str]:
    """The outcome once a success_check gave its verdict (`detail` says how it ended).

    A run that finished on its own is judged by the check, whatever its exit
    status; one that timed out, stalled, hit a limit or was stopped keeps
    its outcome: the check ran on unfinished work.
    """
    if outcome not in JUDGED:
        return outcome, reason
    if passed:
        return (
            Outcome.SUCCEEDED,
            f"success_check passed ({reason})" if reason else "success_check passed",
        )
    return Outcome.FAILED, f"success_check failed: {detail}"


def keeps_branch(keep: Keep, outcome: Outcome) -> bool:
    if keep is Keep.ALWAYS:
        return True
    if keep is Keep.NEVER:
        return False
    return outcome is Outcome.SUCCEEDED
