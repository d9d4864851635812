"""Cron schedules in a time zone, and what to do about fires missed during downtime.

croniter does the calendar work (DST gaps and folds included); this module
decides how many runs a span of missed fires is worth under the task's
`missed` policy: skip (none), once (one), all (each, up to `missed_cap`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from factoryd.core.taskspec import MissedPolicy


def next_fire(expr: str, tz: str, after: float) -> float:
    """The first fire time strictly after `after` (epoch seconds).

    When clocks fall back, a wall-clock time happens twice. A job pinned to
    an hour (its hour field is not `*`) fires at the first occurrence only,
    as Vixie cron does: a nightly job must not run twice on that night.
    When clocks spring forward, a time that does not exist fires at the
    first instant after the gap.
    """
    zone = ZoneInfo(tz)
    pinned_hour = expr.split()[1] != "*" if len(expr.split()) >= 2 else False
    it = croniter(expr, datetime.fromtimestamp(after, tz=zone))
    while True:
        fire = float(it.get_next(float))
        if not pinned_hour or datetime.fromtimestamp(fire, tz=zone).fold == 0:
            return fire


@dataclass(frozen=True, slots=True)
class CatchUp:
    runs: int
    missed: int
    next_fire: float
    decision: str


def catch_up(
    expr: str, tz: str, last_fire: float, now: float, policy: MissedPolicy, cap: int
) -> CatchUp:
    """Fires in (last_fire, now]: how many to run now, and the next one after `now`.

    A `last_fire` after `now` happened in a timeline the wall clock has since
    stepped back from: nothing was missed, and the next fire follows `now`.
    """
    last_fire = min(last_fire, now)
    missed = 0
    fire = next_fire(expr, tz, last_fire)
    while fire <= now and missed <= cap:
        missed += 1
        fire = next_fire(expr, tz, fire)
    if fire <= now:  # more than cap: skip ahead without counting each
        fire = next_fire(expr, tz, now)
    if missed == 0:
        return CatchUp(0, 0, fire, "no fire missed")
    shown = f"{missed}" if missed <= cap else f"more than {cap}"
    if policy is MissedPolicy.SKIP:
        runs = 0
    elif policy is MissedPolicy.ONCE:
        runs = 1
    else:
        runs = min(missed, cap)
    return CatchUp(runs, missed, fire, f"{shown} fire(s) missed; policy {policy}: running {runs}")
