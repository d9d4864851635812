"""What the reconciler knows about each task and each live run, and how it starts runs.

Plain records owned by the loop (the one writer), kept apart so that the
modules that act on them (task table, planner, run book, settlement) share
one vocabulary. `RunnerFactory` is the seam through which every run is
started: the real `Runner` by default, a fake one in tests, so that a pass
can be exercised without processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import psutil
from structlog.typing import FilteringBoundLogger

from factoryd.core.lifecycle import RestartBook, TaskPhase
from factoryd.core.outcome import RunResult, StopRequest
from factoryd.core.taskspec import TaskSpec
from factoryd.observe.logs import get_logger
from factoryd.proc.spawner import Spawner
from factoryd.routing.decision import Decision
from factoryd.run.runspec import Adoption, Gate, RunSpec, StartedCallback
from factoryd.run.workspace_plan import WorkspacePlan


@dataclass(slots=True)
class Clock:
    """The two clocks of the house: monotonic for timeouts and backoff, wall for
    cron and provider reset times. Injected, so tests move time themselves."""

    mono: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


class RunHandle(Protocol):
    """What the loop needs of a runner: run it to its end, ask it to stop."""

    async def run(self) -> RunResult: ...

    def request_stop(self, request: StopRequest) -> None: ...

    def remember_descendants(self, procs: list[psutil.Process]) -> None: ...


class RunnerFactory(Protocol):
    """Makes the runner of one run (the signature of `Runner`'s constructor)."""

    def __call__(
        self,
        spec: RunSpec,
        *,
        on_started: StartedCallback | None = ...,
        clock: Callable[[], float] = ...,
        gate: Gate | None = ...,
        adoption: Adoption | None = ...,
        spawner: Spawner | None = ...,
    ) -> RunHandle: ...


class Sweeper(Protocol):
    """Hunts processes that outlive their runs (strays.StraySweeper)."""

    #: Monotonic time of the next sweep: the loop wakes for it while runs live.
    next_due: float

    def sweep(self, runs: Mapping[str, ActiveRun], now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A runner's report: its run ended with this result."""

    run_id: str
    result: RunResult


RunState = Literal["starting", "running", "stopping"]


@dataclass(slots=True)
class ActiveRun:
    """A run the loop is watching (or, briefly, accounting for)."""

    run_id: str
    task: str
    spec: TaskSpec | None
    arm: str
    cli: str
    pools: tuple[str, ...]
    decision: Decision
    #: None only for a run that recovery found gone: it is settled at once.
    runner: RunHandle | None
    started_mono: float
    started_wall: float
    #: None for a run recovery found gone (no directory, no log of its own).
    run_dir: Path | None = None
    log_path: Path | None = None
    state: RunState = "starting"
    pid: int | None = None
    stop_reason: str | None = None
    #: Stopped by `factoryd restart`: its task starts again at once when it ends.
    restart: bool = False
    #: The run's git worktree, made in its task before it starts and finished
    #: (committed, removed, branch kept or not) after it ends; None: no workspace.
    workspace: WorkspacePlan | None = None
    #: The environment of its workspace hooks (no arm secrets).
    hook_env: dict[str, str] | None = None
    #: A logger bound to the run's task, id, arm and pools: every event about
    #: a run carries them.
    logger: FilteringBoundLogger = field(init=False)
    #: The logger the run's own is bound from (the loop's: binding an existing
    #: logger costs a dict, where `get_logger` resolves structlog's config anew).
    parent_logger: InitVar[FilteringBoundLogger | None] = None

    def __post_init__(self, parent_logger: FilteringBoundLogger | None) -> None:
        base = parent_logger if parent_logger is not None else get_logger()
        self.logger = base.bind(
            task=self.task, run_id=self.run_id, arm=self.arm, pools=list(self.pools)
        )


@dataclass(slots=True)
class TaskState:
    """What the loop knows about one desired task (config task or submission)."""

    spec: TaskSpec
    label: str
    source: str = "config"
    phase: TaskPhase = TaskPhase.PENDING
    reason: str = "new"
    book: RestartBook = field(default_factory=RestartBook.empty)
    retry_at: float | None = None
    exclude: set[str] = field(default_factory=set)
    run: str | None = None
    last_arm: str | None = None
    last_outcome: str | None = None
    #: The log of its current or last run (None: no run yet in this daemon).
    last_log: str | None = None
    runs: int = 0
    restarts: int = 0
    pending_fires: int = 0
    next_fire: float | None = None
    last_fire: float | None = None
    removed: bool = False
    waiting_since: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name
