"""Wall-clock steps: noticed by comparing the two clocks between passes, and
what a step does to schedules.

Timeouts, stalls and backoff run on the monotonic clock and never see a
step. Cron runs on wall time, so a step must not leave a schedule waiting
for a due time computed in the other timeline: after the wall clock stepped
forward 2 h and back, an every-minute task used to wait 2 h for a fire
computed while the clock was ahead. Between two passes both clocks advance
by the same amount (a slow pass or a sleeping loop included); a difference
larger than `STEP_MIN` is a step, logged once as `clock.stepped`.

A step forward needs nothing here: each schedule whose due time was jumped
over fires once on this pass (the table's `fire_schedules`), then on its
due times after the new time. A step back recomputes each schedule's next
fire from the new time (a due time the clock passes again fires again) and
brings a last fire that now lies in the future back to the present, so that
a restart's missed-fire count starts from a time that happened.
"""

from __future__ import annotations

from structlog.typing import FilteringBoundLogger

from factoryd.core.lifecycle import TaskPhase
from factoryd.core.schedule import next_fire
from factoryd.reconcile.table import TaskTable
from factoryd.units.timefmt import iso as _iso

#: Seconds of disagreement between the clocks over one pass that count as a
#: step (NTP slewing moves the wall clock by at most 0.5 ms per second).
STEP_MIN = 5.0


class StepWatch:
    """Remembers both clocks at the last pass; `observe` returns a step or None."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def observe(self, now_m: float, now_w: float) -> float | None:
        last, self._last = self._last, (now_m, now_w)
        if last is None:
            return None
        step = (now_w - last[1]) - (now_m - last[0])
        return step if abs(step) >= STEP_MIN else None


def after_step(table: TaskTable, step: float, now_w: float, logger: FilteringBoundLogger) -> int:
    """Log the step and move schedules to the new time; return how many moved."""
    moved = 0
    if step < 0:
        for rt in list(table.cron.values()):
            spec = rt.spec
            if rt.next_fire is None or spec.schedule is None or rt.removed:
                continue
            if rt.last_fire is not None and rt.last_fire > now_w:
                rt.last_fire = now_w
            due = next_fire(spec.schedule, spec.timezone, now_w)
            if due < rt.next_fire:
                rt.next_fire = due
                moved += 1
                table.batch.task(rt.name)
                if rt.phase is TaskPhase.WAITING:
                    why = f"clock stepped; next fire at {_iso(due)}"
                    table.set_phase(rt, TaskPhase.WAITING, why)
    logger.warning(
        "clock.stepped",
        step_seconds=round(step, 3),
        direction="forward" if step > 0 else "back",
        wall=_iso(now_w),
        schedules_moved=moved,
    )
    return moved
