"""What a run's outcome teaches the router about the arm it ran on.

One rule, in the pure core, because the live daemon (settlement) and the
routing simulator must learn exactly alike: if they differed, the simulator
would prove a router that is not the one that runs. Only what the arm did
teaches; operator actions, shutdowns, limits and lost runs never count for
or against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from factoryd.core.outcome import Outcome


@dataclass(frozen=True, slots=True)
class Lesson:
    """What one run's outcome teaches the router about the arm it ran on."""

    #: Counts in quality and telemetry success rates at all.
    teaches: bool
    #: Counts for the arm (else against it), when it teaches.
    ok: bool
    #: A fault of the arm itself: counts against its health.
    arm_fault: bool


#: Outcomes that say how the arm did: they count for it or against it.
_VERDICTS_ON_THE_ARM = {
    Outcome.SUCCEEDED: True,
    Outcome.FAILED: False,
    Outcome.TIMED_OUT: False,
    Outcome.STALLED: False,
}


def lesson(outcome: Outcome, cli: str, not_arm_fault: bool = False) -> Lesson:
    """What an outcome teaches about the arm. Only what the arm did teaches:

    * `succeeded` counts for it; `failed`, `timed_out`, `stalled` against it
      (for a service too: one that crashes failed);
    * `spawn_failed` of an agent CLI is a fault of the arm (its health); of a
      plain command, of the task;
    * `cancelled` (by the operator, a reload or a shutdown), `limited` (its
      own path: the pool is held), `lost` and `exit_unknown` (no daemon saw
      how it ended) teach nothing: quality, success rates and health stay;
    * `not_arm_fault`: the run never reached the arm (its workspace could not
      be made, an after_create or before_run hook failed): no fault of it.
    """
    ok = _VERDICTS_ON_THE_ARM.get(outcome)
    return Lesson(
        teaches=ok is not None,
        ok=bool(ok),
        arm_fault=outcome is Outcome.SPAWN_FAILED and cli != "command" and not not_arm_fault,
    )
