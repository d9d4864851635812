"""How a run ended, in words the rest of the house shares.

The outcome vocabulary sits in the pure core because the task state machine,
the router's learning, the journal and the metrics all decide on it, and none
of them should have to import the process layer to do so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from factoryd.core.events import LimitHit
from factoryd.routing.model import Usage


class Outcome(enum.StrEnum):
    """How a run ended. Operators act differently on each, so they stay distinct."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    LIMITED = "limited"
    SPAWN_FAILED = "spawn_failed"
    #: The process of a run the journal said was live was gone after a restart.
    LOST = "lost"
    #: An adopted run exited; its status went to its real parent, not to us.
    EXIT_UNKNOWN = "exit_unknown"


@dataclass(frozen=True, slots=True)
class StopRequest:
    outcome: Outcome
    reason: str


@dataclass(slots=True)
class RunResult:
    run_id: str
    outcome: Outcome
    reason: str
    exit_status: int | None = None
    usage: Usage | None = None
    limit: LimitHit | None = None
    started: float = 0.0
    ended: float = 0.0
    pid: int | None = None
    bytes_logged: int = 0
    bytes_dropped: int = 0
    #: The run's log file exists (a run that printed nothing has none).
    log_kept: bool = False
    log_error: str | None = None
    parse_errors: int = 0
    sigkilled: bool = False
    orphans_killed: int = 0
    #: Whether the process got far enough to consume anything.
    started_ok: bool = True
    #: Set when the outcome says nothing about the arm (a workspace that could
    #: not be made, a failing after_create/before_run hook): never a fault.
    not_arm_fault: bool = False
    #: `Finished.event_fields()` of the run's workspace: branch, commit, kept.
    workspace: dict[str, object] | None = None

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)
