"""A run's git worktree around its process: made before it starts, finished after it ends.

The run book's story for one run is "run it, then settle it"; a workspace
wraps that story on both sides and can take seconds of git work, so it lives
here, on worker threads (never on the loop), with its own limit on how many
worktrees are made or finished at once. The worktree is made after the run
has its routing decision and its slot (a failing git never holds a slot it
did not need), and a run whose worktree cannot be made fails without
charging the arm.
"""

from __future__ import annotations

import functools
from pathlib import Path

import anyio

from factoryd.core.outcome import Outcome, RunResult
from factoryd.reconcile.runstate import ActiveRun, Clock
from factoryd.run.workspace import Workspaces

#: Worktrees made or finished at once: checkouts are disk-bound, and eight is
#: enough to keep a burst of starts moving without a thread per run.
CONCURRENT_GIT = 8


class RunWorktrees:
    """The daemon's workspaces, as the run book uses them around each run."""

    def __init__(self, records: Path, clock: Clock) -> None:
        self.workspaces = Workspaces(records)
        self._clock = clock
        self._limiter = anyio.CapacityLimiter(CONCURRENT_GIT)

    async def before(self, run: ActiveRun) -> tuple[bool, RunResult | None]:
        """Make the run's worktree. Returns whether one exists to finish later,
        and a result when the run must end before it starts."""
        plan = run.workspace
        if plan is None:
            return False, None
        if run.pid is not None:  # adopted: its worktree is already there
            return True, None
        created = await anyio.to_thread.run_sync(
            functools.partial(
                self.workspaces.create, plan, env=run.hook_env or {}, log_path=run.log_path
            ),
            limiter=self._limiter,
        )
        if not created.ok:
            return False, self._ended(run, Outcome.SPAWN_FAILED, created.reason, not_arm=True)
        if run.stop_reason is not None:  # stopped while its worktree was made
            return True, self._ended(run, Outcome.CANCELLED, run.stop_reason)
        return True, None

    async def after(self, run: ActiveRun, result: RunResult) -> None:
        """Commit what the run changed, run its hooks, remove the worktree, keep
        the branch by policy. A success_check verdict replaces the outcome: it is
        what the router's quality tracker learns from."""
        plan = run.workspace
        if plan is None:
            return
        with anyio.CancelScope(shield=True):
            done = await anyio.to_thread.run_sync(
                functools.partial(
                    self.workspaces.finish,
                    plan,
                    result.outcome,
                    result.reason,
                    env=run.hook_env or {},
                    log_path=run.log_path,
                ),
                limiter=self._limiter,
            )
        result.outcome, result.reason = done.outcome, done.reason
        result.workspace = done.event_fields()

    def _ended(
        self, run: ActiveRun, outcome: Outcome, reason: str, not_arm: bool = False
    ) -> RunResult:
        return RunResult(
            run.run_id,
            outcome,
            reason,
            started=run.started_mono,
            ended=self._clock.mono(),
            started_ok=False,
            not_arm_fault=not_arm,
        )
