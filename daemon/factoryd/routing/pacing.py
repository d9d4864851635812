"""Pacing: a windowed pool's scarcity is judged against the time its window has left.

A subscription's 5-hour window that is half used with a tenth of its time
left is not scarce: what is left is lost at the reset. Scarcity as 1/f^k of
the fraction left alone made that window 4x dear at any hour, so the
default strategy paid a per-token key while subscription capacity expired
unused (issue 17's simulator: in `subscriptions` it spent $75 a week where
the paced router spends about a third of that, for as many tasks).

Paced, the fraction that counts is f / t, capped at 1, where t is the
share of the window's time still to come: a pool used faster than its
window elapses stays scarce, one used at or below that pace costs its
base price. t is taken at the start of the current step (the window in
`steps` equal parts) so a quote stays true until the step ends and the
router's caches stay valid (quotes.py).
"""

from __future__ import annotations

import math

#: A window is paced in this many steps (a 5-hour window: 15 minutes).
PACE_STEPS = 20


def pace_step(start: float, end: float, now: float, steps: int) -> tuple[float, float]:
    """(share of the window left at the start of `now`'s step, when that step ends)."""
    span = end - start
    if span <= 0 or steps <= 0:
        return 1.0, math.inf
    width = span / steps
    k = min(max(math.floor((now - start) / width), 0), steps - 1)
    return (steps - k) / steps, start + (k + 1) * width


def paced_fraction(fraction_left: float, start: float, end: float, now: float, steps: int) -> float:
    """The fraction left as pacing sees it: f / t, at most 1 (f itself when steps is 0)."""
    if steps <= 0:
        return fraction_left
    share, _ = pace_step(start, end, now, steps)
    return min(1.0, fraction_left / share)
