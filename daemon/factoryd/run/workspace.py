"""A git worktree per run: created before it starts, committed and removed after.

A coding agent's run is worth its cost only if its work survives, and two
runs on one repository must never share a working tree. So a task with a
`workspace` runs in its own `git worktree` of the repository, on a new
branch, under the workspace root; when the run ends whatever it changed is
committed on that branch (whether or not the agent committed itself), the
worktree directory is removed, and the branch is kept or deleted by `keep`.

The seam the daemon uses, all blocking calls for a worker thread:

- `plan(...)`: pure; the worktree path (the run's workdir) and branch,
  known before anything is created, so the launch can name its cwd;
- `Workspaces.create(plan, ...)`: after the run has its routing decision
  and its slot; fails closed, with a reason, and never charges the arm;
- `Workspaces.finish(plan, outcome, ...)`: after the run; returns the
  outcome (a `success_check` may have changed it), branch and commit;
- `Workspaces.sweep(live)`: on start, for what a crashed daemon left.

Each workspace has a record (a small JSON file in the daemon's state dir)
written before git touches anything and removed last, so a sweep finds
every worktree this daemon made, and only those.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from factoryd.core.outcome import Outcome
from factoryd.core.workspace_spec import (
    Hook,
    checked_outcome,
    expand,
    keeps_branch,
    runs_after_run,
)
from factoryd.run.gitcmd import Git, GitError, admin_lock
from factoryd.run.hooks import HookResult, run_hook
from factoryd.run.workspace_plan import (
    Created,
    Finished,
    SweepReport,
    WorkspaceError,
    WorkspacePlan,
)
from factoryd.run.wsrecords import Records, spec_from_dict, spec_to_dict


class Workspaces:
    """Creates, finishes and sweeps run worktrees; records live in `records_dir`."""

    def __init__(self, records_dir: Path, git: Git | None = None) -> None:
        self.records_dir = records_dir
        self.records = Records(records_dir)
        self.git = git or Git()

    # -- create -------------------------------------------------------------------

    def create(self, p: WorkspacePlan, *, env: Mapping[str, str], log_path: Path | None) -> Created:
        """Make the worktree and run after_create and before_run. Never raises."""
        t0 = time.monotonic()
        base: str | None = None
        hooks: list[HookResult] = []
        made = False
        try:
            if p.path.exists() or p.path.is_symlink():
                raise WorkspaceError(f"workspace path {p.path} already exists")
            self._write_record(p, phase="creating")
            base = self._resolve(p)
            p.path.parent.mkdir(parents=True, exist_ok=True)
            with admin_lock(p.repo):
                self.git.run(
                    p.repo, "worktree", "add", "--quiet", "--no-checkout", "-b", p.branch,
                    str(p.path), base, what="git worktree add",
                )  # fmt: skip
            made = True
            # The checkout (most of the time, on a large tree) runs outside the
            # repository's admin lock, in parallel with other runs' checkouts.
            self.git.run(p.path, "reset", "--hard", "--quiet", "--no-recurse-submodules",
                         what="git checkout of the worktree")  # fmt: skip
            self._write_record(p, phase="created", base=base)
            for name in ("after_create", "before_run"):
                result = self._hook(p, name, env, log_path, base=base)
                if result is not None:
                    hooks.append(result)
                    if not result.ok:
                        raise WorkspaceError(f"workspace hook {result.describe()}")
        except (WorkspaceError, GitError, OSError) as exc:
            reason = _one_line(exc)
            self._undo(p, made)
            return Created(False, f"workspace: {reason}", base, tuple(hooks), time.monotonic() - t0)
        return Created(True, "", base, tuple(hooks), time.monotonic() - t0)

    def _resolve(self, p: WorkspacePlan) -> str:
        if not p.repo.is_dir():
            raise WorkspaceError(f"repository {p.repo} does not exist")
        got = self.git.run(p.repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                           f"{p.spec.ref}^{{commit}}", check=False)  # fmt: skip
        if got.returncode != 0:
            check = self.git.run(p.repo, "rev-parse", "--git-dir", check=False)
            if check.returncode != 0:
                raise WorkspaceError(f"{p.repo} is not a git repository")
            raise WorkspaceError(f"ref {p.spec.ref!r} names no commit in {p.repo}")
        return got.stdout.strip()

    def _undo(self, p: WorkspacePlan, made: bool) -> None:
        """A failed create leaves nothing: no worktree, no branch, no record."""
        if made:
            self._remove_worktree(p, [])
            with admin_lock(p.repo):
                self.git.run(p.repo, "branch", "-D", "--", p.branch, check=False)
        self.records.drop(p.run_id)

    # -- finish -------------------------------------------------------------------

    def finish(
        self,
        p: WorkspacePlan,
        outcome: Outcome,
        reason: str,
        *,
        env: Mapping[str, str],
        log_path: Path | None,
        run_hooks: bool = True,
    ) -> Finished:
        """After the run: commit, verdict, before_remove, remove, keep. Never raises.

        The commit comes first so that it holds the agent's work and nothing
        of what `after_run` leaves (test caches, coverage files); `{outcome}`
        in its message is how the agent's process ended.
        """
        record = self.records.read(p.run_id) or {}
        base = record.get("base")
        problems: list[str] = []
        hooks: list[HookResult] = []
        left_at: str | None = None
        exists = (p.path / ".git").exists()
        self._write_record(p, phase="finishing", base=base, outcome=str(outcome))
        commit: str | None = None
        if exists:
            try:
                commit = self._commit(p, outcome)
            except (GitError, OSError) as exc:
                problems.append(f"commit failed: {_one_line(exc)}")
                left_at = str(p.path)
        if commit is None:
            commit = self._branch_head(p)
        if exists and run_hooks and runs_after_run(outcome):
            check = self._hook(p, "after_run", env, log_path, base=base, outcome=outcome)
            if check is not None:
                hooks.append(check)
                if p.spec.success_check:
                    outcome, reason = checked_outcome(outcome, reason, check.ok, check.describe())
                    self._write_record(p, phase="finishing", base=base, outcome=str(outcome))
                elif not check.ok:
                    problems.append(f"hook {check.describe()}")
        if exists and run_hooks and left_at is None:
            done = self._hook(
                p, "before_remove", env, log_path, base=base, outcome=outcome, commit=commit
            )
            if done is not None:
                hooks.append(done)
                if not done.ok:
                    problems.append(f"hook {done.describe()}")
        if left_at is None:
            self._remove_worktree(p, problems)
        kept = keeps_branch(p.spec.keep, outcome) or left_at is not None
        if not kept and commit is not None:
            with admin_lock(p.repo):
                deleted = self.git.run(p.repo, "branch", "-D", "--", p.branch, check=False)
            if deleted.returncode != 0:
                problems.append(f"branch {p.branch} not deleted: {deleted.stderr.strip()[:200]}")
                kept = True
        if left_at is None:
            self.records.drop(p.run_id)
        else:
            self._write_record(p, phase="left", base=base, outcome=str(outcome))
        return Finished(
            run_id=p.run_id,
            outcome=outcome,
            reason=reason,
            branch=p.branch,
            commit=commit,
            base=base,
            kept=kept,
            changed=commit is not None and commit != base,
            hooks=tuple(hooks),
            problems=tuple(problems),
            left_at=left_at,
        )

    def _commit(self, p: WorkspacePlan, outcome: Outcome) -> str | None:
        """Commit what the agent left uncommitted; return the branch's commit."""
        g = self.git
        g.run(p.path, "add", "--all", what="git add")
        staged = g.run(p.path, "diff", "--cached", "--quiet", check=False)
        if staged.returncode not in (0, 1):
            raise GitError(f"git diff failed: {staged.stderr.strip()[:200]}")
        if staged.returncode == 1:
            values = {"task": p.task, "run_id": p.run_id, "arm": p.arm, "outcome": str(outcome)}
            s = p.spec
            identity = {
                "GIT_AUTHOR_NAME": s.author_name,
                "GIT_AUTHOR_EMAIL": s.author_email,
                "GIT_COMMITTER_NAME": s.author_name,
                "GIT_COMMITTER_EMAIL": s.author_email,
            }
            task = " ".join(p.task.split())  # one line, whatever the name holds
            trailer = f"Factoryd-Task: {task}\nFactoryd-Run: {p.run_id}\nFactoryd-Arm: {p.arm}"
            g.run(p.path, "commit", "--quiet", "--no-verify", "-m", expand(s.message, values),
                  "-m", trailer, env=identity, what="git commit")  # fmt: skip
        head = g.run(p.path, "rev-parse", "--verify", "HEAD", what="git rev-parse").stdout.strip()
        if head != self._branch_head(p):
            # The agent moved HEAD off the run's branch: the branch follows its work.
            g.run(p.repo, "update-ref", f"refs/heads/{p.branch}", head, what="git update-ref")
        return head

    def _branch_head(self, p: WorkspacePlan) -> str | None:
        got = self.git.run(p.repo, "rev-parse", "--verify", "--quiet",
                           f"refs/heads/{p.branch}", check=False)  # fmt: skip
        return got.stdout.strip() or None if got.returncode == 0 else None

    def _remove_worktree(self, p: WorkspacePlan, problems: list[str]) -> None:
        with admin_lock(p.repo):
            gone = self.git.run(p.repo, "worktree", "remove", "--force", "--force", str(p.path),
                                check=False)  # fmt: skip
        if gone.returncode != 0 or p.path.exists():
            shutil.rmtree(p.path, ignore_errors=True)
            with admin_lock(p.repo):
                self.git.run(p.repo, "worktree", "prune", check=False)
            if p.path.exists():
                problems.append(f"worktree {p.path} could not be removed")

    # -- hooks --------------------------------------------------------------------

    def _hook(
        self,
        p: WorkspacePlan,
        name: str,
        env: Mapping[str, str],
        log_path: Path | None,
        *,
        base: str | None,
        outcome: Outcome | None = None,
        commit: str | None = None,
    ) -> HookResult | None:
        hook: Hook | None = getattr(p.spec.hooks, name)
        if hook is None:
            return None
        extra = {
            "FACTORYD_HOOK": name,
            "FACTORYD_WORKSPACE": str(p.path),
            "FACTORYD_BRANCH": p.branch,
            "FACTORYD_BASE": base or "",
            "FACTORYD_RUN_ID": p.run_id,
            "FACTORYD_TASK": p.task,
            "FACTORYD_ARM": p.arm,
        }
        if outcome is not None:
            extra["FACTORYD_OUTCOME"] = str(outcome)
        if commit is not None:
            extra["FACTORYD_COMMIT"] = commit
        return run_hook(name, hook, p.path, {**env, **extra}, log_path)

    # -- sweep --------------------------------------------------------------------

    def sweep(
        self,
        live: Collection[str],
        repos: Iterable[str] = (),
        outcomes: Mapping[str, Outcome] | None = None,
    ) -> SweepReport:
        """Finish what a crashed daemon left (its records), then `git worktree prune`.

        `live`: run ids still running (adopted); their workspaces stay. Others
        are committed (never lose work) and their branch kept by `keep`, for
        the outcome recovery gave the run (`outcomes`), else the one the
        record holds, else `lost`. No hooks run. `repos`: repositories to
        prune besides those the records name (every configured one).
        """
        report = SweepReport()
        seen: set[str] = set(repos)
        for path, rec in self.records.all():
            try:
                p = _plan_of(rec or {})
                given = (outcomes or {}).get(p.run_id)
                outcome = given or Outcome((rec or {}).get("outcome") or Outcome.LOST)
            except (KeyError, TypeError, ValueError) as exc:
                report.problems.append(f"unreadable workspace record {path}: {exc!r}")
                continue
            seen.add(str(p.repo))
            if p.run_id in live:
                report.skipped.append(p.run_id)
                continue
            done = self.finish(
                p, outcome, "workspace swept after a daemon restart", env={}, log_path=None,
                run_hooks=False,
            )  # fmt: skip
            report.finished.append(done)
        for repo in sorted(seen):
            if Path(repo).is_dir():
                with admin_lock(Path(repo)):
                    self.git.run(Path(repo), "worktree", "prune", check=False)
                report.pruned.append(repo)
        return report

    def recorded(self, run_id: str) -> WorkspacePlan | None:
        """The plan of a run's workspace from its record (an adopted run's finish)."""
        rec = self.records.read(run_id)
        try:
            return _plan_of(rec) if rec else None
        except (KeyError, TypeError, ValueError):
            return None

    def _write_record(self, p: WorkspacePlan, *, phase: str, **extra: Any) -> None:
        self.records.write(
            p.run_id,
            {
                "run_id": p.run_id,
                "task": p.task,
                "arm": p.arm,
                "repo": str(p.repo),
                "path": str(p.path),
                "branch": p.branch,
                "phase": phase,
                "spec": spec_to_dict(p.spec),
                **extra,
            },
        )


def _plan_of(rec: dict[str, Any]) -> WorkspacePlan:
    """Raises KeyError, TypeError or ValueError on a record that is not ours."""
    return WorkspacePlan(
        spec_from_dict(rec["spec"]), str(rec["task"]), str(rec["run_id"]), str(rec["arm"]),
        Path(rec["repo"]), Path(rec["path"]), str(rec["branch"]),
    )  # fmt: skip


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."
