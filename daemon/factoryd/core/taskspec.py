"""Desired state: what a task is, how it restarts, and how it is launched.

A `TaskSpec` is immutable and compared by value: a config reload restarts
a task only when its spec really changed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from factoryd.core.workspace_spec import WorkspaceSpec
from factoryd.routing.model import RouteRequest


class TaskKind(enum.StrEnum):
    #: Keep one run alive; restart it by policy.
    SERVICE = "service"
    #: Run to completion once.
    ONESHOT = "oneshot"
    #: Run on a cron schedule.
    SCHEDULED = "scheduled"


class RestartPolicy(enum.StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class MissedPolicy(enum.StrEnum):
    """What a scheduled task does about fire times missed while the daemon was down."""

    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: sleep U(0, min(max, initial * 2^n))."""

    initial: float = 1.0
    max: float = 300.0
    jitter: bool = True
    #: A run that stayed up this long resets the failure count.
    reset_after: float = 60.0


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    kind: TaskKind
    route: RouteRequest
    prompt: str | None = None
    prompt_file: str | None = None
    argv: tuple[str, ...] | None = None
    workdir: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    inherit_env: tuple[str, ...] = ()
    timeout: float | None = None
    stall_timeout: float | None = None
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    max_restarts: int = 5
    restart_window: float = 600.0
    backoff: Backoff = field(default_factory=Backoff)
    stop_grace: float = 10.0
    isolate_home: bool = False
    stdin_prompt: bool = False
    schedule: str | None = None
    timezone: str = "UTC"
    missed: MissedPolicy = MissedPolicy.ONCE
    missed_cap: int = 10
    enabled: bool = True
    #: A git worktree per run (see core/workspace_spec.py); None: `workdir` rules.
    workspace: WorkspaceSpec | None = None
    #: "once": one fire per fleet per due time, or a service on one host at a
    #: time (reconcile/fleetonce.py); None: every host runs its own.
    fleet: str | None = field(default=None, metadata={"digest": "omit_default"})
