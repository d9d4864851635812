"""A reconciler driven by hand: a fake runner factory and a fake clock.

No process is started and no time passes on its own: a test runs a pass
(`step`), ends a run with the outcome it wants (`end`), moves the clock
(`later`), and reads the task table. A pass costs microseconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_kit import write_config
from factoryd.config.loader import load_config
from factoryd.core.outcome import Outcome, RunResult, StopRequest
from factoryd.reconcile.reconciler import Reconciler
from factoryd.reconcile.runstate import Clock
from factoryd.run.runspec import RunSpec


class FakeRunner:
    """Stands where a `Runner` would: records stop requests, ends when told."""

    def __init__(self, spec: RunSpec, **kw: Any) -> None:
        self.spec = spec
        self.gate = kw.get("gate")
        self.on_started = kw.get("on_started")
        self.stops: list[StopRequest] = []
        self.result: RunResult | None = None

    async def run(self) -> RunResult:
        assert self.result is not None, "end() sets the result before the run is executed"
        return self.result

    def request_stop(self, request: StopRequest) -> None:
        self.stops.append(request)

    def remember_descendants(self, procs: list[Any]) -> None:
        pass


class FakeFleet:
    """The runner factory: every runner it made, in order."""

    def __init__(self) -> None:
        self.runners: list[FakeRunner] = []

    def __call__(self, spec: RunSpec, **kw: Any) -> FakeRunner:
        runner = FakeRunner(spec, **kw)
        self.runners.append(runner)
        return runner


class NoSweeps:
    """No stray hunting: the runs here have no processes."""

    next_due = float("inf")

    def sweep(self, runs: Any, now: float) -> None:
        pass


class Harness:
    def __init__(self, tmp_path: Path, text: str, seed: int = 1) -> None:
        self.now = 1000.0
        #: How far the wall clock was stepped (`step_wall`); the monotonic one never is.
        self.wall_offset = 0.0
        self.fleet = FakeFleet()
        clock = Clock(mono=lambda: self.now, wall=lambda: 1.8e9 + self.now + self.wall_offset)
        self.rec = Reconciler(
            load_config(write_config(tmp_path, text)),
            clock=clock,
            rng=random.Random(seed),
            base_env={},
            runner_factory=self.fleet,
            sweeper=NoSweeps(),
        )

    def step(self) -> None:
        """One pass; the runs it launched are left for `end` to finish."""
        self.rec.reconcile_pass()
        self.rec.book.launched.clear()

    def later(self, seconds: float) -> None:
        self.now += seconds

    def step_wall(self, seconds: float) -> None:
        """The wall clock steps (NTP, an operator's `date -s`); no time passes."""
        self.wall_offset += seconds

    def wall(self) -> float:
        return self.rec.clock.wall()

    def run_of(self, task: str) -> str:
        run_id = self.rec.tasks[task].run
        assert run_id is not None, f"{task} has no run ({self.rec.tasks[task].reason})"
        return run_id

    def runner(self, task: str) -> FakeRunner:
        runner = self.rec.runs[self.run_of(task)].runner
        assert isinstance(runner, FakeRunner)
        return runner

    async def end(
        self, task: str, outcome: Outcome, reason: str = "", duration: float = 1.0
    ) -> None:
        """The task's run ends with `outcome` (reported as a runner task would)."""
        run = self.rec.runs[self.run_of(task)]
        runner = self.runner(task)
        runner.result = RunResult(
            run.run_id,
            outcome,
            reason or str(outcome),
            started=self.now - duration,
            ended=self.now,
        )
        await self.rec.book.execute(run)

    def phases(self, pick: Callable[[str], bool] = lambda _: True) -> dict[str, str]:
        return {n: str(t.phase) for n, t in self.rec.tasks.items() if pick(n)}
