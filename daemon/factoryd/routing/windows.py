"""Pool reset windows: which window contains a given instant.

A window is computed from (anchor, period, now) alone, never advanced step
by step. That is what makes reset catch-up correct after an idle gap: a
daemon that slept through ten windows lands in the current one in a single
step instead of wiping usage once per missed window (seed B's defect).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from factoryd.units.durations import Period


def window_bounds(anchor: float, period: Period, now: float) -> tuple[float, float]:
    """Return (start, end) in epoch seconds of the window that contains `now`."""
    if period.months:
        return _month_window(anchor, period.months, now)
    span = period.seconds
    index = math.floor((now - anchor) / span)
    start = anchor + index * span
    # Guard against float rounding putting `now` just outside [start, end).
    if now < start:
        start -= span
    elif now >= start + span:
        start += span
    return start, start + span


def _add_months(base: datetime, months: int) -> datetime:
    total = base.month - 1 + months
    year, month = base.year + total // 12, total % 12 + 1
    # Clamp the day: a window anchored on the 31st resets on the 30th in April.
    day = min(base.day, _days_in_month(year, month))
    return base.replace(year=year, month=month, day=day)


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    first_next = datetime(year, month + 1, 1, tzinfo=UTC)
    return (first_next - datetime(year, month, 1, tzinfo=UTC)).days


def _month_window(anchor: float, months: int, now: float) -> tuple[float, float]:
    base = datetime.fromtimestamp(anchor, tz=UTC)
    current = datetime.fromtimestamp(now, tz=UTC)
    elapsed = (current.year - base.year) * 12 + (current.month - base.month)
    index = math.floor(elapsed / months)
    start = _add_months(base, index * months)
    while start.timestamp() > now:
        index -= 1
        start = _add_months(base, index * months)
    end = _add_months(base, (index + 1) * months)
    while end.timestamp() <= now:
        index += 1
        start, end = end, _add_months(base, (index + 1) * months)
    return start.timestamp(), end.timestamp()
