"""What the reconciler knows about each task and each live run.

Plain records owned by the reconciler (the one writer); kept apart so the
loop's module holds the loop and little else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from factoryd.core.lifecycle import RestartBook, TaskPhase
from factoryd.core.taskspec import TaskSpec
from factoryd.observe.logs import get_logger
from factoryd.routing.decision import Decision
from factoryd.run.runner import Runner


@dataclass(slots=True)
class Clock:
    mono: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


@dataclass(slots=True)
class ActiveRun:
    run_id: str
    task: str
    spec: TaskSpec | None
    arm: str
    cli: str
    pools: tuple[str, ...]
    decision: Decision
    runner: Runner
    started_mono: float
    started_wall: float
    run_dir: Any
    log_path: Any
    state: str = "starting"
    pid: int | None = None
    stop_reason: str | None = None
    #: A logger bound to the run's task, id, arm and pools: every event about
    #: a run carries them.
    log: Any = None

    def __post_init__(self) -> None:
        self.log = get_logger(
            task=self.task, run_id=self.run_id, arm=self.arm, pools=list(self.pools)
        )


@dataclass(slots=True)
class TaskRuntime:
    """What the loop knows about one desired task."""

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
