"""The order of a task's remaining attempts: which arms, then which first.

A task whose run fails is run again on another arm (core.lifecycle's
exclusions), up to its restart budget. Its chance of success then depends
on the set of arms its remaining attempts will use, and its cost on the
order they are tried in. The simulator's `mixed` scenario showed the
difference: a router that escalated straight to the dearest arm after a
failure succeeded as often as cheap-to-strong baselines at 1.4 times
their price, and in `degrading` one that let a weak arm take an attempt
from a strong one lost tasks.

So when the request says how many attempts are left, the router plans
them. An arm may take this run when the task's chance of never succeeding,
with this arm now and the best fits left on the attempts after it, is at
most PLAN_SLACK worse than with the best fits on every attempt; among
those arms the strategy's score decides. While attempts remain that lets a
cheap adequate arm (or one on a pool with room) go first; on the last
attempt only the best fit left qualifies. Arms below the task type's
quality floor qualify only when the arms above it are fewer than the
attempts: they would run on a later attempt anyway. The other arms follow,
best fit first, in case every reservation before them is refused.

PLAN_SLACK trades chance for price. The simulator at 20 paired seeds:
0.002 kept a free local model off boilerplate it does well (`local` lost
9 tasks to round-robin); 0.005 holds in every bundled scenario.
"""

from __future__ import annotations

import math

from factoryd.routing.decision import Ranked

#: How much more likely a task may end up never succeeding (absolute, over
#: its remaining attempts) for its next run to go to a cheaper arm.
PLAN_SLACK = 0.005


def _task_fit(entry: Ranked) -> float:
    components = entry[2].components
    assert components is not None, "a rejected arm is never ranked"
    return components.task_fit


def _fit(entry: Ranked) -> tuple[float, float, int]:
    components = entry[2].components
    assert components is not None, "a rejected arm is never ranked"
    return (-components.task_fit, entry[0], entry[1])


def cascade(
    ranked: list[Ranked], below: list[Ranked], attempts: int, slack: float = PLAN_SLACK
) -> tuple[list[Ranked], list[Ranked]]:
    """(the ranking to reserve in, the below-floor arms left out of it).

    `ranked`: arms above the quality floor; `below`: arms under it;
    `attempts`: this run and the runs left after it (at least 1).
    """
    n = max(attempts, 1)
    pool = ranked + below if len(ranked) < n else ranked
    by_fit = sorted(pool, key=_fit)
    misses = [1.0 - _task_fit(e) for e in by_fit]
    best = math.prod(misses[:n])
    # The best fits left for the attempts after this one: the first n - 1 of
    # the others, which are the first n - 1 overall for any arm past them.
    after_head = math.prod(misses[: n - 1])
    fits, rest = [], []
    for i, entry in enumerate(by_fit):
        after = after_head if i >= n - 1 else math.prod(misses[:i] + misses[i + 1 : n])
        # the task's chance of never succeeding if this arm runs now and the
        # best fits left take the attempts after it
        if misses[i] * after <= best + slack:
            fits.append(entry)
        else:
            rest.append(entry)
    fits.sort()
    kept = {id(e) for e in fits}
    left_out = [e for e in below if id(e) not in kept]
    left_out.sort()
    return fits + [e for e in rest if not e[2].below_quality], left_out
