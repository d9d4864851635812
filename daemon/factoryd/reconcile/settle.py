"""Settlement: what a finished run means for the router, the journal and its task.

Three verdicts, each computed here and applied by the caller:

* for the router, `lesson`: what the outcome says about the arm (the one
  place that rule lives);
* for pools and the journal, `settle_run`: the reservation committed (or
  rolled back), telemetry and quality fed as the lesson says, a usage limit
  reported, and the run's end record (a journal op for the pass's batch);
* for the task, `judge`: its next phase under its restart policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from factoryd.core.lesson import lesson
from factoryd.core.lifecycle import Verdict, verdict_after_run
from factoryd.core.outcome import Outcome, RunResult
from factoryd.reconcile.runstate import ActiveRun, TaskState
from factoryd.routing.decision import Decision
from factoryd.routing.engine import RoutingEngine, Settlement
from factoryd.routing.model import Usage
from factoryd.state import journal as j
from factoryd.state.batch import jsonable


@dataclass(frozen=True, slots=True)
class Settled:
    """The router's side of a finished run, and its journal record."""

    #: What the run used (None: it never got going, or no daemon watched it).
    usage: Usage | None
    #: What it cost (the CLI's figure, else the arm's prices).
    cost: float | None
    settlement: Settlement
    #: When the usage limit it hit lifts (None: it hit none).
    limit_until: float | None
    journal_op: j.Op


def settle_run(
    engine: RoutingEngine, run: ActiveRun, result: RunResult, task_type: str, now: float
) -> Settled:
    """Close a finished run's reservation and teach the router what its outcome says."""
    usage = (result.usage or Usage()) if result.started_ok else None
    unknown = (
        result.outcome in (Outcome.LOST, Outcome.EXIT_UNKNOWN)
        and result.usage is None
        and result.started_ok
    )
    if unknown:
        # It ran (at least partly) while no daemon watched: what it used is
        # unknown, so it is charged its estimate rather than nothing.
        res_id = run.decision.reservation.id if run.decision.reservation else ""
        engine.ledger.commit(res_id, run.decision.charges)
        settlement = Settlement(
            dict(run.decision.charges), rolled_back=False, hold_had_expired=False
        )
        usage = None
    else:
        taught = lesson(result.outcome, run.cli, result.not_arm_fault)
        settlement = engine.settle(
            run.decision,
            now=now,
            usage=usage,
            ok=taught.ok,
            duration=result.duration,
            task_type=task_type,
            arm_fault=taught.arm_fault,
            # The engine's `limited` means "no quality or telemetry signal".
            limited=not taught.teaches,
        )
    cost = None
    if usage is not None:
        cost = usage.cost_usd
        arm = engine.arms.get(run.arm)
        if cost is None and arm is not None:
            cost = arm.cost_of(usage)  # the CLI reports none: the arm's prices
    limit_until = None
    if result.outcome is Outcome.LIMITED and result.limit is not None:
        limit = result.limit
        limit_until = engine.report_limit(run.arm, limit.until, now, limit.text)
    # The journal keeps what the run cost beside what it used (for `show`).
    used = None if usage is None else {**jsonable(usage), "cost": cost}
    op = j.op_run_ended(run.run_id, now, str(result.outcome), result.reason, used)
    return Settled(usage, cost, settlement, limit_until, op)


def settle_unstarted(
    engine: RoutingEngine, decision: Decision, task_type: str, now: float
) -> Settlement:
    """A run that could not even be prepared: its hold is rolled back; it teaches nothing."""
    return engine.settle(decision, now=now, usage=None, ok=False, duration=0.0, task_type=task_type)


def judge(task: TaskState, result: RunResult, now: float, rng: random.Random) -> Verdict:
    """The task's next phase after its run ended (advances its restart book)."""
    return verdict_after_run(
        task.spec, task.book, result.outcome, result.reason, result.duration, now, rng
    )
