"""What a run is asked to do, and how the reconciler and a runner meet.

A `RunSpec` is everything a runner needs to start one run (argv, env,
workdir, log, parser, limits); `Adoption` is the same for a live process a
previous daemon left; a `Gate` holds the spawn until the run's record is in
the journal. They live apart from the runner so that the layers that build
them (launch, recovery, the journal batch) need not import the machinery
that watches processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from factoryd.core.events import AgentEvent
from factoryd.proc.capture import RunLog
from factoryd.proc.spawnlog import SpawnLog
from factoryd.run.agents.base import Parser


@dataclass(slots=True)
class RunSpec:
    run_id: str
    task: str
    arm: str
    cli: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    log: RunLog
    parser: Parser
    stdin_path: str | None = None
    timeout: float | None = None
    stall_timeout: float | None = None
    stop_grace: float = 10.0
    #: Where the spawn is noted the moment the process exists, so that a
    #: daemon that dies before journaling the pid still finds out it spawned.
    spawn_log: SpawnLog | None = None


@dataclass(slots=True)
class Gate:
    """Opened by the reconciler once the run's record is committed to the journal."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    ok: bool = True
    error: str = ""

    def open(self, ok: bool = True, error: str = "") -> None:
        self.ok, self.error = ok, error
        self.event.set()


@dataclass(frozen=True, slots=True)
class Adoption:
    """A live process a previous daemon started, to be watched by this one."""

    pid: int
    create_time: float
    #: Monotonic time of the original start, so timeouts keep counting.
    started: float
    #: Where the leader holds its own output pipes' read ends (see process.py).
    leader_fds: tuple[int, int] | None = None


#: (pid, the leader's fds for its pipes' read ends, its start time if known).
#: The spawn helper reads the start time before the leader can be collected;
#: after a Popen on the loop it is None, and the journal reads it when it
#: records the pid (journal.op_run_started), off the loop.
StartedCallback = Callable[[int, tuple[int, int] | None, float | None], None]
EventCallback = Callable[[AgentEvent], None]


__all__ = ["Adoption", "EventCallback", "Gate", "RunSpec", "StartedCallback"]
