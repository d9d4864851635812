"""What a run's workspace will be, and what became of it: plain values.

Split from `workspace.py` (the git work) so that the launch can name a run's
working directory and branch before anything exists, and so that the values
the daemon logs and journals (`Created`, `Finished`, `SweepReport`) can be read
without the machinery that makes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryd.core.outcome import Outcome
from factoryd.core.workspace_spec import WorkspaceSpec, branch_name, dir_name, ref_problem
from factoryd.run.hooks import HookResult


class WorkspaceError(Exception):
    """A workspace cannot be made: the run fails closed with this reason."""


@dataclass(frozen=True, slots=True)
class WorkspacePlan:
    """Where a run's worktree goes and what its branch is called."""

    spec: WorkspaceSpec
    task: str
    run_id: str
    arm: str
    repo: Path
    path: Path
    branch: str


def plan(spec: WorkspaceSpec, task: str, run_id: str, arm: str, state_dir: Path) -> WorkspacePlan:
    """Name the run's worktree and branch (no I/O). Raises WorkspaceError."""
    root = Path(spec.root) if spec.root else state_dir / "workspaces"
    root = Path(os.path.abspath(root))  # noqa: PTH100 (no I/O: resolve() reads links)
    name = dir_name(task, run_id)
    path = root / name
    if path.parent != root or name in (".", ".."):  # dir_name guarantees it; say so twice
        raise WorkspaceError(f"workspace name {name!r} would leave the root {root}")
    branch = branch_name(spec.branch, task, run_id, arm)
    problem = ref_problem(branch)
    if problem is not None:
        raise WorkspaceError(f"branch name {branch!r} {problem}")
    repo = Path(os.path.abspath(spec.repo))  # noqa: PTH100 (as above)
    return WorkspacePlan(spec, task, run_id, arm, repo, path, branch)


@dataclass(frozen=True, slots=True)
class Created:
    """How making the workspace went. A failure is never the arm's fault."""

    ok: bool
    reason: str = ""
    base: str | None = None
    hooks: tuple[HookResult, ...] = ()
    seconds: float = 0.0
    #: Always False: git, the repository and the operator's hooks are not the arm.
    arm_fault: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """What the run left: its (possibly re-judged) outcome, branch and commit."""

    run_id: str
    outcome: Outcome
    reason: str
    branch: str
    #: The branch's commit after the run (None when it could not be read).
    commit: str | None
    base: str | None
    kept: bool
    #: The run changed something (its commit differs from the base).
    changed: bool
    hooks: tuple[HookResult, ...] = ()
    problems: tuple[str, ...] = ()
    #: The worktree directory is still there (a commit failed: never lose work).
    left_at: str | None = None

    def event_fields(self) -> dict[str, Any]:
        """The fields `run.finished` and `factoryd show` carry."""
        return {
            "branch": self.branch,
            "commit": self.commit,
            "branch_kept": self.kept,
            "changed": self.changed,
            "workspace_problems": list(self.problems) or None,
            "workspace_left_at": self.left_at,
        }


@dataclass(slots=True)
class SweepReport:
    finished: list[Finished] = field(default_factory=list)
    #: Records of runs still live (adopted): left alone.
    skipped: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
